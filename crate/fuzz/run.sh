#!/usr/bin/env bash
# Runs one fuzz target the way fuzz/README.md describes (issue #17): its working corpus in crate/fuzz/corpus/TARGET
# (not committed), the committed seeds in crate/fuzz/seeds/TARGET, its dictionary, at the lowest CPU priority.
#
#   crate/fuzz/run.sh TARGET [SECONDS] [more libFuzzer flags]      e.g. crate/fuzz/run.sh render 3600
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: crate/fuzz/run.sh TARGET [SECONDS] [libFuzzer flags]}
seconds=${2:-120}
shift $(( $# >= 2 ? 2 : 1 ))
extra=()
case $target in
  # minijinja leaks reference cycles (`{% set ns.x = ns %}`, see fuzz/README.md): leak checks off for this target,
  # in libFuzzer's loop and in LeakSanitizer's report at exit
  chat_template) dict=fuzz/dicts/jinja.dict; extra=(-detect_leaks=0); export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 ;;
  model_config | safetensors_index | render | safetensors) dict=fuzz/dicts/json.dict ;;
  *) dict= ;;
esac
mkdir -p "fuzz/corpus/$target"
exec nice -n 19 cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
  -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 ${dict:+-dict=$dict} ${extra[@]+"${extra[@]}"} "$@"
