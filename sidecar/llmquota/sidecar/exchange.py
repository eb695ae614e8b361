"""One request's journey through the phases, and the refusal that ends it early.

Every phase (authenticate, admit, relay, settle) writes what it learns into the request's
`Exchange`; `recording` turns a `Refusal` raised by any of them into the OpenAI error
envelope and counts and logs the exchange once, whatever the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmquota.policy.decision import Refused
from llmquota.policy.limits import ResolvedPolicy
from llmquota.sidecar.metrics import ModelLabels
from llmquota.sidecar.wire import Usage, error_body

__all__ = ["Exchange", "Refusal"]


@dataclass(slots=True)
class Exchange:
    """One request's journey, for its metrics and its log line."""

    request_id: str
    endpoint: str
    started: float
    upstream_s: float = 0.0
    policy: ResolvedPolicy | None = None
    model: str = ""
    outcome: str = "served"
    status: int = 200
    reserved: bool = False  # the store holds a reservation for this request
    usage: Usage | None = None
    cost_usd: float = 0.0

    def subject(self, model_labels: ModelLabels) -> tuple[str, str, str, str]:
        """namespace, team, key name, model: the labels of per-subject metrics."""
        policy = self.policy
        if policy is None:
            return "", "", "", model_labels.label(self.model, ())
        model = model_labels.label(self.model, policy.models)
        return policy.namespace, policy.team or "", policy.key_name, model


class Refusal(Exception):  # noqa: N818 - a control-flow signal, not an error of the sidecar
    """Stop handling and answer with this status and OpenAI error envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str,
        code: str | None,
        *,
        outcome: str,
        headers: dict[str, str] | None = None,
        param: str | None = None,
        close_connection: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(message, error_type, code, param)
        self.outcome = outcome
        self.headers = headers or {}
        # The body was left unread: the connection cannot carry another request.
        self.close_connection = close_connection

    @classmethod
    def of(cls, refused: Refused) -> Refusal:
        """The policy layer's refusal as a response."""
        return cls(
            refused.status,
            refused.message,
            refused.error_type,
            refused.code,
            outcome=refused.code,
            headers=refused.headers,
        )
