"""Device side of a remote benchmark: reads a JSON request on stdin, prints the JSON document.

Run by :func:`mmdeploy.targets.remote.run_remote` over ssh as
``python -m mmdeploy.bench.remote_worker``.  Errors go to stderr as one line, exit 2/1.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    from mmdeploy.bench import bench
    from mmdeploy.bench.harness import BenchSettings
    from mmdeploy.errors import MMDeployError
    from mmdeploy.targets import TargetProfile

    request = json.loads(sys.stdin.read())
    try:
        doc = bench(request["paths"], BenchSettings(**request["settings"]),
                    TargetProfile(**request["target"]), components=request.get("components"))
    except MMDeployError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    json.dump(doc, sys.stdout, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
