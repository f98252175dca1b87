# Sourced by the bench scripts: the roomcast flags that lift every limit a benchmark would otherwise measure
# instead of the server (rate limits, per-address limits, input budgets, /echo's default size), for whichever
# build is given: a flag is passed only if that build's --help lists it, so older builds can be compared too.
#
#   source bench/server-flags.sh; "$bin" --addr ... $(roomcast_bench_flags "$bin")
roomcast_bench_flags() {
  local bin=$1 help flags
  help=$("$bin" --help 2>/dev/null)
  flags="--rate 1000000 --burst 1000000 --max-connections 15000"
  local pair
  for pair in \
    "--echo-max-message-size 16777216" \
    "--max-connections-per-ip 0" "--handshake-rate-per-ip 0" \
    "--max-frames-per-sec 0" "--max-bytes-per-sec 0" \
    "--join-rate 1000000" "--join-burst 1000000" \
    "--rate-bytes 0" "--room-rate-bytes 0"; do
    if grep -q -- "${pair%% *} " <<<"$help"; then
      flags="$flags $pair"
    fi
  done
  echo "$flags"
}
