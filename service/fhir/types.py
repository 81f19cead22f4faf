"""FHIR R4B's type names, as a path or a log line may name them."""
from __future__ import annotations

from fhir.resources.R4B import get_fhir_model_class
from werkzeug.routing import PathConverter, UnicodeConverter

NOT_A_TYPE = "(not a FHIR resource type)"


def known_type(name: str) -> bool:
    """Whether `name` is a FHIR resource or data type (a name the caller chose is logged only when it is one)."""
    try:
        get_fhir_model_class(name)
    except ValueError:
        return False
    return name[:1].isupper()


class FhirTypeConverter(UnicodeConverter):
    """A FHIR resource type in a URL (`/fhir/<fhir_type:rtype>`): any segment, as werkzeug's default converter takes;
    the access log (service/api/accesslog.py) names it when it is a type, else NOT_A_TYPE (a name the caller chose)."""

    @staticmethod
    def logged(value: str) -> str:
        return value if known_type(value) else NOT_A_TYPE


class FhirPathConverter(PathConverter):
    """The rest of a FHIR URL no other route takes (`/fhir/<fhir_path:rest>`): logged as its type (as
    FhirTypeConverter), `/{id}` for the segment after it and `/...` for any more (`Patient/{id}/...`)."""

    @staticmethod
    def logged(value: str) -> str:
        parts = [part for part in value.split("/") if part]
        if not parts:
            return ""
        return FhirTypeConverter.logged(parts[0]) + ("/{id}" if len(parts) > 1 else "") \
            + ("/..." if len(parts) > 2 else "") + ("/" if value.endswith("/") else "")


CONVERTERS = {"fhir_type": FhirTypeConverter, "fhir_path": FhirPathConverter}
