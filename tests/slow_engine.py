"""Scripted engine that takes time per batch (for kill/interrupt tests). A test double."""

import time

from tests.helpers import invoice_truth
from tests.scripted_engine import ScriptedEngine


class SlowEngine(ScriptedEngine):
    def __init__(self, delay_s: float):
        super().__init__(callback=lambda r: invoice_truth())
        self.delay_s = delay_s

    def generate(self, requests):
        time.sleep(self.delay_s)
        return super().generate(requests)


def factory(config=None):
    options = getattr(config, "options", {}) or {}
    return SlowEngine(float(options.get("delay_s", 0.1)))
