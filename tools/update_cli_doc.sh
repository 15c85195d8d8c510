#!/usr/bin/env bash
# Regenerates the key table of docs/cli.md from the code: tools/update_cli_doc.sh [build/latentforge]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/latentforge}
/usr/bin/python3 - "$BIN" <<'PY'
import subprocess, sys, re
table = subprocess.run([sys.argv[1], "--markdown-keys"], check=True, capture_output=True, text=True).stdout
doc = open("docs/cli.md").read()
begin = doc.index("<!-- keys:begin")
begin = doc.index("\n", begin) + 1
end = doc.index("<!-- keys:end -->")
open("docs/cli.md", "w").write(doc[:begin] + "\n" + table + "\n" + doc[end:])
PY
echo "docs/cli.md: key table regenerated"
