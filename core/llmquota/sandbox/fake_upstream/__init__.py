"""A fake OpenAI-compatible upstream for tests, the demo and benchmarks.

It speaks OpenAI's wire format (the official `openai` client parses it), reports
deterministic usage so tests know exact costs, breaks on request (`x-fake-fault`), and
records what it was sent (`GET /_fake/requests`).
"""

from llmquota.sandbox.fake_upstream.app import create_app
from llmquota.sandbox.fake_upstream.faults import FAULT_HEADER, FaultPlan, parse_faults
from llmquota.sandbox.fake_upstream.settings import FakeUpstreamSettings

__all__ = ["FAULT_HEADER", "FakeUpstreamSettings", "FaultPlan", "create_app", "parse_faults"]
