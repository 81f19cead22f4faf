"""The peer-style benchmark's one rule, over decoded JSON only: shared by bench/peer.py (in our server) and
bench/healthchain_peer.py (in HealthChain's, whose environment has no Flask)."""
from __future__ import annotations

from typing import Any

SNOMED = "http://snomed.info/sct"
VERTEBRAL_HEMANGIOMA = "448232005"


def has_vertebral_hemangioma(prefetch: dict[str, Any], patient_id: str) -> bool:
    """The one rule: an active Condition of this patient coded as a vertebral hemangioma."""
    for value in prefetch.values():
        if not isinstance(value, dict) or value.get("resourceType") != "Bundle":
            continue
        for entry in value.get("entry") or ():
            resource = entry.get("resource") or {}
            if resource.get("resourceType") != "Condition":
                continue
            if (resource.get("subject") or {}).get("reference") != f"Patient/{patient_id}":
                continue
            if any(c.get("system") == SNOMED and c.get("code") == VERTEBRAL_HEMANGIOMA
                   for c in (resource.get("code") or {}).get("coding") or ()):
                return True
    return False
