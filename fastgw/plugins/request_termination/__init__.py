"""`request-termination`: answer the requests on its routes with a fixed response, or the
request echoed (Kong's). The declaration is schema.py, the access step handler.py."""

from __future__ import annotations

from fastgw.config.schema import Reader
from fastgw.plugins.building import SpecBase

from .handler import PRIORITY, RequestTermination, fixed_answer
from .schema import TerminationConfig, parse

__all__ = ["PRIORITY", "SPEC", "RequestTermination"]


class _Spec(SpecBase):
    name = "request-termination"

    def parse_config(self, reader: Reader) -> TerminationConfig:
        return parse(reader)

    def build(self, config: TerminationConfig, runtime: object) -> RequestTermination:
        answer = fixed_answer(config.status_code, config.message, config.body, config.content_type)
        return RequestTermination(
            answer, message=config.message, echo=config.echo, trigger=config.trigger
        )


SPEC = _Spec()
