"""Applies a finished session's surviving mutants again, one at a time, and
runs a test command on each: did the tests written after the run kill them?

    python benchmarks/mutation/replant.py SESSION CLONE [PART NPARTS] -- TEST_COMMAND...

SESSION is a cosmic-ray session file (run.sh prints its path), CLONE an
installed checkout of the current commit (mutants are applied there, with
`cosmic-ray apply`, and undone with `git checkout`). PART/NPARTS split the
survivors between clones (run one process per clone). JOBS=FILE limits the
run to the job ids (their first 8 characters) listed in FILE. Prints one
line per mutant: KILLED or SURVIVED, the job id, the operator and the
mutated line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def surviving(session: str, clone: str) -> list[tuple[str, str, int, str]]:
    dump = subprocess.run([f"{clone}/.venv/bin/cosmic-ray", "dump", session], capture_output=True, text=True, check=True).stdout
    out = []
    for line in dump.splitlines():
        item, result = json.loads(line)
        if result and result.get("test_outcome") == "survived":
            m = item["mutations"][0]
            out.append((m["module_path"], m["operator_name"], m["occurrence"], item["job_id"]))
    return sorted(out)


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    split = argv.index("--")
    args, test_command = argv[:split], argv[split + 1 :]
    session, clone = args[0], args[1]
    if not os.path.exists(f"{clone}/.venv/bin/cosmic-ray"):
        print(f"replant: {clone}/.venv/bin/cosmic-ray not found; install cosmic-ray in that clone's .venv", file=sys.stderr)
        return 2
    part, nparts = (int(args[2]), int(args[3])) if len(args) >= 4 else (0, 1)
    jobs = surviving(session, clone)
    if os.environ.get("JOBS"):
        wanted = set(open(os.environ["JOBS"]).read().split())
        jobs = [j for j in jobs if j[3][:8] in wanted]
    env = {**os.environ, "VIDTRT_TEST_THREADS": "1", "OMP_NUM_THREADS": "1"}
    for i, (module, operator, occurrence, job) in enumerate(jobs):
        if i % nparts != part:
            continue
        subprocess.run([f"{clone}/.venv/bin/cosmic-ray", "apply", module, operator, str(occurrence)], cwd=clone, check=True, capture_output=True)
        diff = subprocess.run(["git", "diff", "-U0", "--", module], cwd=clone, capture_output=True, text=True).stdout
        added = [line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
        try:
            killed = subprocess.run(test_command, cwd=clone, capture_output=True, env=env).returncode != 0
        finally:
            subprocess.run(["git", "checkout", "--", module], cwd=clone, check=True)
        print("KILLED  " if killed else "SURVIVED", job[:8], operator, occurrence, (added[0] if added else "?")[:150], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
