"""Hostile parameter values: every path/query parameter has a bounded schema, and values that used to escape as
500s (HTTP) or tracebacks (CLI) are answered 4xx JSON / one line and a non-zero exit, or accepted when valid."""

from __future__ import annotations

import json

from tests.serve.conftest import START_ROWS
from typer.testing import CliRunner

from radiolens.cli import app as cli_app

HASH = "a" * 64
# Digits that are not ASCII: str.isdigit() is True for all of them, int() accepts some and refuses others.
UNICODE_DIGITS = ["\u00b2", "\u0661", "\uff11", "\u2460", "\U0001d7e3"]
HUGE_INT = "9" * 20  # beyond int64: overflowed the database driver
# Offsets that push a valid local time outside what a UTC datetime can hold
EDGE_TIMES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+23:59"]


def _is_json_4xx(r, status: int | None = None) -> bool:
    ok = 400 <= r.status_code < 500 and "error" in r.json()
    return ok and (status is None or r.status_code == status)


def test_hostile_parameter_values_are_4xx_or_clamped(client):
    """One app for all cases (each app loads a model and migrates a database)."""
    auditor, admin = client.keys.h("auditor"), client.keys.h("admin")
    for value in EDGE_TIMES:
        for param in ("since", "until"):
            r = client.get("/v1/audit", params={param: value}, headers=auditor)
            assert r.status_code == 200, (param, value, r.text)
            # (each export is itself audited as a read: count the other rows)
            rows = [row for line in r.text.splitlines() if (row := json.loads(line))["event"] != "read"]
            # a bound before year 1 UTC selects everything as a lower bound, nothing as an upper one; and back
            expected = START_ROWS if (param == "since") == value.startswith("0001") else 0
            assert len(rows) == expected, (param, value, rows)
    for value in ["2024-13-01", "yesterday", "2024-01-01T00:00:00+99:00", "\uff12024-01-01", "2" * 5000]:
        r = client.get("/v1/audit", params={"since": value}, headers=auditor)
        assert _is_json_4xx(r, 422), (value, r.status_code, r.text[:200])
    for seq in UNICODE_DIGITS + [HUGE_INT, "-1", ""]:
        r = client.get("/v1/audit/verify", params={"expect_head": f"{seq}:{HASH}"}, headers=auditor)
        assert _is_json_4xx(r, 422), (seq, r.status_code, r.text[:200])
    for key_ref in [HUGE_INT, "1" + "0" * 19, "\u0661\u0662", "x" * 300]:
        r = client.delete(f"/v1/keys/{key_ref}", headers=admin)
        assert _is_json_4xx(r), (key_ref, r.status_code, r.text[:200])
    for pid in ["0" * 33, "Z" * 32, "\u0661" * 32]:
        r = client.get(f"/v1/predictions/{pid}", headers=client.keys.h("clinician"))
        assert _is_json_4xx(r, 422), (pid, r.status_code)
    # the valid forms still work
    head = client.get("/v1/audit/verify", headers=auditor).json()
    r = client.get("/v1/audit/verify", params={"expect_head": f"{head['head_seq']}:{head['head_hash']}"},
                   headers=auditor)
    assert r.status_code == 200 and r.json()["ok"], r.text


def test_params_in_openapi_have_bounds(client):
    """Every path and query parameter documents a bounded type (pattern and max length, date-time, enum,
    boolean, or an integer with a minimum and a maximum)."""
    spec = client.get("/openapi.json").json()
    unbounded = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for p in op.get("parameters", []):
                schema = p["schema"]
                variants = schema.get("anyOf", [schema])
                for v in variants:
                    if v.get("type") in ("boolean", "null") or "enum" in v or "const" in v:
                        continue
                    if v.get("type") == "string" and ("maxLength" in v and "pattern" in v
                                                      or v.get("format") == "date-time"):
                        continue
                    if v.get("type") == "integer" and "minimum" in v and "maximum" in v:
                        continue
                    unbounded.append(f"{method.upper()} {path} {p['name']}: {v}")
    assert not unbounded, unbounded


# ---------------------------------------------------------------------- the same values on the CLI
def _cli(args, state):
    return CliRunner().invoke(cli_app, [*args, "--state-dir", str(state)])



def test_cli_hostile_values_one_line_error_or_clamped(tmp_path):
    state = tmp_path / "state"
    assert _cli(["users", "create", "--role", "auditor"], state).exit_code == 0

    def one_line_error(r, starts: str = "error:") -> None:
        assert r.exit_code == 2 and isinstance(r.exception, SystemExit), (r.output, r.exception)
        assert r.output.strip().startswith(starts) and len(r.output.strip().splitlines()) == 1, r.output

    for seq in UNICODE_DIGITS + [HUGE_INT]:
        one_line_error(_cli(["audit", "verify", "--expect-head", f"{seq}:{HASH}"], state))
    for key_ref in [HUGE_INT, "\u00b2"]:
        one_line_error(_cli(["users", "revoke", key_ref], state), "error: no such key")
    for value in EDGE_TIMES:
        r = _cli(["audit", "export", "--since", value], state)
        assert r.exit_code == 0 and r.exception is None, (r.output, r.exception)
        assert len(r.stdout.splitlines()) == (1 if value.startswith("0001") else 0)  # the key_created row
    for value in ["yesterday", "2024-01-01T00:00:00+99:00", "\uff12024-01-01"]:
        one_line_error(_cli(["audit", "export", "--until", value], state))
