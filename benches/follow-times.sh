#!/usr/bin/env bash
# Speaker-change follow time of the video MCU, end to end (issue 7: "the canvas follows within
# 1 s"). Runs the e2e test `the_canvas_shows_the_speaker_big_and_follows_it`
# (tests/video_conference.rs: the real server, three webrtc-rs peers) RUNS times; each run
# measures three follow times: from the first sample of the new speaker's tone leaving its peer
# (the old speaker stopped just before) to the first canvas a peer decodes that shows the new
# speaker big. Prints every sample, p50 and max; keeps them in benches/results/follow_times.txt.
#
#   benches/follow-times.sh [RUNS]          # default 5 runs (15 samples), debug build
#   PROFILE=release benches/follow-times.sh # the server and peers built with --release
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
flags=()
if [ "${PROFILE:-debug}" = release ]; then flags+=(--release); fi
out=benches/results/follow_times.txt
samples=$(mktemp)
trap 'rm -f "$samples"' EXIT
for i in $(seq 1 "$runs"); do
    cargo test "${flags[@]}" --test video_conference the_canvas_shows_the_speaker_big_and_follows_it \
        -- --exact >/dev/null
    cat tests/artifacts/video_conference_follow_times.txt >>"$samples"
    echo "run $i/$runs: $(grep -o 'after [0-9]* ms' tests/artifacts/video_conference_follow_times.txt | tr '\n' ' ')" >&2
done
{
    echo "# $(date -u +%FT%TZ) $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), profile ${PROFILE:-debug}"
    cat "$samples"
    grep -o 'after [0-9]* ms' "$samples" | awk '{print $2}' | sort -n | awk '
        { v[NR] = $1 }
        END { if (NR == 0) exit 1; printf "samples %d  p50 %d ms  max %d ms  min %d ms\n", NR, v[int((NR + 1) / 2)], v[NR], v[1] }'
} | tee "$out"
