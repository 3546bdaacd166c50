#!/usr/bin/env bash
# Renders every kiosk screen into docs/screens/ with `autograph capture`, replaying the
# committed sample recordings (samples/strokes/). The README's screenshots come from here.
# Usage: scripts/screens.sh [AUTOGRAPH_COMMAND...]   (default: cargo run -q -p autograph-device --;
#        an emulator may come first: scripts/screens.sh qemu-aarch64 -L /usr/aarch64-linux-gnu BIN)
# SCREENS_DIR=DIR writes elsewhere (device/tests/capture.rs checks docs/screens/ is current).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then run=("$@"); else run=(cargo run -q -p autograph-device --); fi
out="${SCREENS_DIR:-docs/screens}"
mkdir -p "$out"
shot() { "${run[@]}" capture "$@" >/dev/null; }

for size in 800x480 480x272; do
  shot --size "$size" --screen prompt --user ada --screenshot "$out/prompt-$size.png"
  shot --size "$size" --screen signing --user ada --replay samples/strokes/ada-4.json --screenshot "$out/signing-$size.png"
  shot --size "$size" --screen enroll --user ada --progress 2/3 --replay samples/strokes/ada-2.json \
    --screenshot "$out/enroll-$size.png"
  shot --size "$size" --screen result --user ada --decision accepted --score 0.8123 --threshold 0.7410 \
    --screenshot "$out/result-accepted-$size.png"
done
# The other results at 800x480 (illustrative scores, given on the command line).
shot --screen result --user ada --decision rejected --score 0.5312 --threshold 0.7410 \
  --screenshot "$out/result-rejected-800x480.png"
shot --screen result --user ada --decision possible-replay --score 0.9987 --threshold 0.7410 \
  --screenshot "$out/result-replay-800x480.png"
shot --screen result --user ada --decision enrolled --progress 3/3 --screenshot "$out/result-enrolled-800x480.png"
# RGB565 panels: the same signing screen through the 16-bit encoding.
shot --size 480x272 --screen signing --user ben --replay samples/strokes/ben-1.json --pixel-format rgb565 \
  --screenshot "$out/signing-480x272-rgb565.png"
ls "$out"
