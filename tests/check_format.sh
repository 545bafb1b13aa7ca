#!/usr/bin/env bash
# Fails if a C++ file of the project is not formatted as .clang-format says.
# Usage: check_format.sh <repo root>
set -u
root=$1
command -v clang-format >/dev/null || { echo "clang-format not installed (build.sh test installs it)"; exit 1; }
cd "$root" || exit 1
files=$(git ls-files '*.cc' '*.h' 2>/dev/null || find engine processors replay topics bench tests schemas -name '*.cc' -o -name '*.h')
bad=0
for f in $files; do
  if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
    echo "not formatted: $f (clang-format -i $f)"
    bad=1
  fi
done
exit $bad
