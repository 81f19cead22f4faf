def test_discovery_lists_patient_view_with_narrow_prefetch(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    services = {s["id"]: s for s in response.json["services"]}
    pv = services["avh-patient-view"]
    assert pv["hook"] == "patient-view" and pv["title"] and pv["description"]
    assert pv["prefetch"]["patient"] == "Patient/{{context.patientId}}"
    assert set(pv["prefetch"]) == {"patient", "conditions", "observations", "procedures", "medicationRequests",
                                   "serviceRequests", "diagnosticReports", "medicationAdministrations"}
    assert "http://snomed.info/sct|71286001" in pv["prefetch"]["conditions"]


def test_unknown_service_is_404_json(client):
    response = client.post("/cds-services/nope", json={})
    assert response.status_code == 404
    assert response.json["error"] == "unknown_service"
