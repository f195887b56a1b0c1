"""A pushed stream event is visible: `features push` reads customer_realtime back, `features online --view` too."""

from __future__ import annotations

import json

from tests.conftest import make_settings


def _json_after(text: str, marker: str) -> list[dict]:
    """The JSON list printed after ``marker`` in a command's output."""
    tail = text.split(marker, 1)[1] if marker else text
    return json.loads(tail[tail.index("["):])


def test_push_then_read_the_view_it_wrote(world, redis_db, redis_addr, cli):
    from mlplatform.features.definitions import apply_definitions

    settings = make_settings(world, redis_addr=redis_addr)
    apply_definitions(settings)
    pushed = cli(settings, ["features", "push", "--customer-id", "7", "--amount", "123.25", "--merchant-id", "10003"])
    assert pushed.exit_code == 0, pushed.output
    (row,) = _json_after(pushed.output, "online now")
    assert row["customer_realtime__last_amount"] == 123.25 and row["customer_realtime__last_merchant_id"] == 10003

    online = cli(settings, ["features", "online", "--customer-id", "7", "--customer-id", "8",
                            "--view", "customer_realtime"])
    assert online.exit_code == 0, online.output
    rows = {r["customer_id"]: r for r in _json_after(online.output, "")}
    assert rows[7]["customer_realtime__last_amount"] == 123.25
    assert rows[8]["customer_realtime__last_amount"] is None  # nothing pushed or materialized for 8

    model = cli(settings, ["features", "online", "--customer-id", "7"])  # the model's features: not there
    assert model.exit_code == 0 and "last_amount" not in model.output

    unknown = cli(settings, ["features", "online", "--customer-id", "7", "--view", "nope"])
    assert unknown.exit_code == 2 and "customer_realtime" in unknown.output and "Traceback" not in unknown.output
