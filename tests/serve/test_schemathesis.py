"""Schemathesis (property-based API testing from the OpenAPI schema) against a live server on loopback, with
``--checks all``: no 500s, responses conform to the schema, schema-valid requests are accepted, schema-invalid
ones rejected with 4xx. Every operation is exercised with a key of a role allowed to call it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from radiolens.serve.store.auth import create_key
from radiolens.serve.store.tables import ApiKey

# Operations by the role that may call them (path regex -> role).
_ROLE_OF = {r"^/v1/(predictions|models|me|session)": "clinician",
            r"^/v1/(audit|monitoring|service)|^/metrics": "auditor", r"^/v1/keys": "admin"}


# An upload is schema-valid whatever its bytes (format: binary), and only a decodable radiograph can be
# accepted: for the upload, "valid data accepted" means not 5xx, and a refusal is one of the documented 4xx.
_UPLOAD_CONFIG = """[[operations]]
include-name = "POST /v1/predictions"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "413", "415", "422", "503", "504"]
headers = {{ Authorization = "Bearer {key}" }}

# The worklist's cursor is opaque (only a next_cursor the server handed out is one): any other string the
# schema allows is refused with 422.
[[operations]]
include-name = "GET /v1/predictions"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "422"]
headers = {{ Authorization = "Bearer {key}" }}

# Signing in: schema-valid credentials are still wrong ones (401), and many of them are rate-limited (429).
[[operations]]
include-name = "POST /v1/session"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "429"]

"""


def _keys_out_of_reach(app) -> dict[str, str]:
    """Keys whose user ids are far from the small ids the fuzzer tries on ``DELETE /v1/keys/{id}`` (it would
    otherwise revoke the keys it is testing with, and every later request would be a 401)."""
    from radiolens.serve.store.audit import utcnow

    with Session(app.state.service.engine) as s, s.begin():
        s.add(ApiKey(id=7 * 10**16, key_id="f" * 16, key_hash="x", role="clinician", label="placeholder",
                     created_at=utcnow(), revoked_at=utcnow()))
    with Session(app.state.service.engine) as s, s.begin():
        return {role: create_key(s, role, label=f"schemathesis {role}")[1] for role in set(_ROLE_OF.values())}


def run_schemathesis(url: str, keys: dict[str, str], workdir: Path, max_examples: int, phases: str,
                     prediction_id: str) -> tuple[int, str, dict]:
    cfg = workdir / "schemathesis.toml"
    # a stored prediction, so the operations on one reach past their 404
    known = (f'[[operations]]\ninclude-path-regex = "^/v1/predictions/"\nparameters = {{ prediction_id = '
             f'"{prediction_id}" }}\nheaders = {{ Authorization = "Bearer {keys["clinician"]}" }}\n\n')
    cfg.write_text(_UPLOAD_CONFIG.format(key=keys["clinician"]) + known  # the first matching entry applies
                   + "".join(f'[[operations]]\ninclude-path-regex = "{rx}"\n'
                             f'headers = {{ Authorization = "Bearer {keys[role]}" }}\n\n'
                             for rx, role in _ROLE_OF.items()))
    report = workdir / "report.json"
    cmd = [str(Path(sys.executable).with_name("st")), "--config-file", str(cfg), "run", f"{url}/openapi.json",
           "--checks", "all", "--max-examples", str(max_examples), "--seed", "7", "--phases", phases,
           "--workers", "1", "--no-color", "--generation-database", "none", "--request-timeout", "30",
           "--report", "json", "--report-json-path", str(report), "--output-truncate", "false"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=workdir)
    data = json.loads(report.read_text()) if report.is_file() else {}
    (workdir / "schemathesis.txt").write_text(proc.stdout + proc.stderr)
    return proc.returncode, proc.stdout + proc.stderr, data


def _summary(output: str) -> str:
    lines = [x for x in output.splitlines() if re.search(r"passed|failed|error|cases|operations", x, re.I)]
    return "\n".join(lines[-12:])


@pytest.mark.parametrize("max_examples, phases", [
    pytest.param(8, "examples,coverage,fuzzing", id="fast"),
    pytest.param(60, "examples,coverage,fuzzing,stateful", id="thorough", marks=pytest.mark.slow),
])
def test_schemathesis_checks_all(live, tmp_path, kermany_samples, max_examples, phases):
    import httpx

    srv, _ = live(mc_dropout_passes=0)
    keys = _keys_out_of_reach(srv.server.config.app)
    made = httpx.post(f"{srv.url}/v1/predictions", headers={"Authorization": f"Bearer {keys['clinician']}"},
                      files={"file": ("u", kermany_samples[0][0].read_bytes())}, timeout=60)
    assert made.status_code == 201, made.text
    rc, output, _report = run_schemathesis(srv.url, keys, tmp_path, max_examples, phases, made.json()["id"])
    print(_summary(output))
    assert rc == 0, output[-6000:]
    assert re.search(r"Test cases:\s+(\d+) generated, \1 passed", output), _summary(output)
