"""HealthChain 0.16.1 serving patient-view with the one-rule model-free walk of issue 18's peer: the request as
HealthChain's CDSRequest (prefetch left as dicts), a walk over the prefetch Bundles, one card. Run only by
`python -m bench.installed_peer`, from a virtual environment with healthchain installed (not avh-cds's: it pins
another fhir.resources); the rule is bench/peer.py's (bench/peer_rule.py)."""
from healthchain.gateway import CDSHooksService, HealthChainAPI
from healthchain.models.requests.cdsrequest import CDSRequest
from healthchain.models.responses.cdsresponse import Card, CDSResponse

from bench.peer_rule import has_vertebral_hemangioma

app = HealthChainAPI()
cds = CDSHooksService()


@cds.hook("patient-view", id="avh-patient-view")
def patient_view(request: CDSRequest) -> CDSResponse:
    if not has_vertebral_hemangioma(request.prefetch or {}, request.context.patientId):
        return CDSResponse(cards=[])
    return CDSResponse(cards=[Card(summary="Vertebral hemangioma: check for cord compression", indicator="warning",
                                   source={"label": "peer-style benchmark rule"})])


app.register_service(cds)
