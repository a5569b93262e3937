#!/usr/bin/env bash
# Backup pipeline vs the usual shell pipelines, on the same NDJSON, in the same run.
#
#   scripts/bench/backup-baselines.sh [SIZE_MB ...]      default: 100 1000
#
# For each size it generates table-like NDJSON (deterministic, seed 1; see
# shared/benches/support/items.rs) under /tmp, then times, one after another:
#   gzip -6 | openssl enc -aes-256-cbc -pbkdf2     (the classic cron backup)
#   zstd -3 -T1 | openssl enc -aes-256-cbc -pbkdf2 (same compressor family and level as shipgate)
#   shipgate: backup_file write (NDJSON -> zstd 3 -> AES-256-GCM 1 MiB chunks + SHA-256 + manifest)
# and the way back (decrypt + decompress + SHA-256 vs shipgate's verification pass).
# Each process runs under /usr/bin/time -v: a pipeline's CPU time and peak RSS are the sums over
# its processes (they run at the same time). Wall time is the whole pipeline. The input is read
# once beforehand so every contender reads it from the page cache. Everything it writes is under
# one mktemp directory in /tmp, deleted on exit.
#
# Environment: BACKUP_FILE=path to a prebuilt example binary (skips the cargo build);
# SEED (default 1).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(100 1000)
SEED="${SEED:-1}"

need() { command -v "$1" >/dev/null 2>&1 || { echo "missing $1${2:+ ($2)}" >&2; exit 1; }; }
need gzip
need openssl
need zstd "apt-get install -y zstd"
need sha256sum
[ -x /usr/bin/time ] || { echo "missing /usr/bin/time (apt-get install -y time)" >&2; exit 1; }

# Room for the input plus three outputs of the largest size (compressed outputs are far smaller).
largest=0
for s in "${SIZES[@]}"; do
  [[ "$s" =~ ^[0-9]+$ ]] || { echo "size must be whole MB: $s" >&2; exit 1; }
  (( s > largest )) && largest=$s
done
avail_mb=$(df -Pm /tmp | awk 'NR==2 {print $4}')
if (( avail_mb < largest * 2 + 512 )); then
  echo "/tmp has ${avail_mb} MB free; ${largest} MB input needs about $((largest * 2 + 512)) MB" >&2
  exit 1
fi

if [ -z "${BACKUP_FILE:-}" ]; then
  (cd "$ROOT" && cargo build --release -p shipgate --example backup_file >&2)
  BACKUP_FILE="$ROOT/target/release/examples/backup_file"
fi

WORK="$(mktemp -d /tmp/shipgate-bench.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
mkdir -m 700 "$WORK/keys"
export SHIPGATE_BENCH_PASS="bench-only-passphrase-not-a-secret"
PASS=(-pass env:SHIPGATE_BENCH_PASS)

now() { date +%s.%N; }
sum() { awk 'BEGIN { s = 0; for (i = 1; i < ARGC; i++) s += ARGV[i]; printf "%.3f", s }' "$@"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

# Fields of one /usr/bin/time -v report: cpu seconds (user+sys) and peak RSS in KiB.
cpu_of() { awk -F': ' '/User time|System time/ {s += $2} END {printf "%.2f", s}' "$1"; }
rss_of() { awk -F': ' '/Maximum resident set size/ {print $2}' "$1"; }

ROWS=()
# row NAME SIZE_BYTES WALL CPU RSS_KIB OUT_BYTES; rows are tab-separated:
# name, MB, wall s, MB/s, CPU s, MB/s per CPU s, peak RSS MB, compression ratio.
row() {
  ROWS+=("$(awk -v n="$1" -v b="$2" -v w="$3" -v c="$4" -v r="$5" -v o="$6" 'BEGIN {
    printf "%s\t%.0f\t%.2f\t%.1f\t%.2f\t%.1f\t%.1f\t%s", n, b/1e6, w, b/1e6/w, c, b/1e6/c, r/1024, (o > 0 ? sprintf("%.2fx", b/o) : "-")
  }')")
}

echo "machine: $(nproc) cores, $(lscpu | awk -F': *' '/Model name/ {print $2; exit}'), $(uname -sr)" >&2
echo "tools: $(gzip --version | head -1); $(zstd --version); $(openssl version)" >&2

for size in "${SIZES[@]}"; do
  in="$WORK/items-${size}MB.ndjson"
  echo "== ${size} MB: generating $in (seed $SEED)" >&2
  "$BACKUP_FILE" gen "$in" --mb "$size" --seed "$SEED" >&2
  bytes=$(stat -c %s "$in")
  cat "$in" >/dev/null
  echo "load before ${size} MB runs: $(uptime)" >&2

  # gzip -6 | openssl
  t0=$(now)
  /usr/bin/time -v -o "$WORK/t1" gzip -6 -c <"$in" \
    | /usr/bin/time -v -o "$WORK/t2" openssl enc -aes-256-cbc -pbkdf2 "${PASS[@]}" -out "$WORK/out.gz.enc"
  row "gzip -6 | openssl aes-256-cbc" "$bytes" "$(since "$t0")" \
    "$(sum "$(cpu_of "$WORK/t1")" "$(cpu_of "$WORK/t2")")" \
    "$(( $(rss_of "$WORK/t1") + $(rss_of "$WORK/t2") ))" "$(stat -c %s "$WORK/out.gz.enc")"

  # zstd -3 -T1 | openssl
  t0=$(now)
  /usr/bin/time -v -o "$WORK/t1" zstd -q -3 -T1 -c <"$in" \
    | /usr/bin/time -v -o "$WORK/t2" openssl enc -aes-256-cbc -pbkdf2 "${PASS[@]}" -out "$WORK/out.zst.enc"
  row "zstd -3 -T1 | openssl aes-256-cbc" "$bytes" "$(since "$t0")" \
    "$(sum "$(cpu_of "$WORK/t1")" "$(cpu_of "$WORK/t2")")" \
    "$(( $(rss_of "$WORK/t1") + $(rss_of "$WORK/t2") ))" "$(stat -c %s "$WORK/out.zst.enc")"

  # shipgate
  t0=$(now)
  /usr/bin/time -v -o "$WORK/t1" "$BACKUP_FILE" write "$in" "$WORK/out.sgbk" --key-dir "$WORK/keys" >"$WORK/sg.txt"
  echo "shipgate write: $(cat "$WORK/sg.txt")" >&2
  row "shipgate BackupWriter (zstd 3 + AES-256-GCM + SHA-256)" "$bytes" "$(since "$t0")" \
    "$(cpu_of "$WORK/t1")" "$(rss_of "$WORK/t1")" "$(stat -c %s "$WORK/out.sgbk")"

  # The way back: everything decrypted, decompressed and hashed.
  t0=$(now)
  /usr/bin/time -v -o "$WORK/t1" openssl enc -d -aes-256-cbc -pbkdf2 "${PASS[@]}" -in "$WORK/out.gz.enc" \
    | /usr/bin/time -v -o "$WORK/t2" gzip -dc \
    | /usr/bin/time -v -o "$WORK/t3" sha256sum >/dev/null
  row "restore: openssl -d | gzip -d | sha256sum" "$bytes" "$(since "$t0")" \
    "$(sum "$(cpu_of "$WORK/t1")" "$(cpu_of "$WORK/t2")" "$(cpu_of "$WORK/t3")")" \
    "$(( $(rss_of "$WORK/t1") + $(rss_of "$WORK/t2") + $(rss_of "$WORK/t3") ))" 0

  t0=$(now)
  /usr/bin/time -v -o "$WORK/t1" openssl enc -d -aes-256-cbc -pbkdf2 "${PASS[@]}" -in "$WORK/out.zst.enc" \
    | /usr/bin/time -v -o "$WORK/t2" zstd -q -dc \
    | /usr/bin/time -v -o "$WORK/t3" sha256sum >/dev/null
  row "restore: openssl -d | zstd -d | sha256sum" "$bytes" "$(since "$t0")" \
    "$(sum "$(cpu_of "$WORK/t1")" "$(cpu_of "$WORK/t2")" "$(cpu_of "$WORK/t3")")" \
    "$(( $(rss_of "$WORK/t1") + $(rss_of "$WORK/t2") + $(rss_of "$WORK/t3") ))" 0

  t0=$(now)
  /usr/bin/time -v -o "$WORK/t1" "$BACKUP_FILE" verify "$WORK/out.sgbk" --key-dir "$WORK/keys" >"$WORK/sg.txt"
  echo "shipgate verify: $(cat "$WORK/sg.txt")" >&2
  row "restore: shipgate verify (GCM tags + zstd + SHA-256 + JSON per record)" "$bytes" "$(since "$t0")" \
    "$(cpu_of "$WORK/t1")" "$(rss_of "$WORK/t1")" 0

  rm -f "$in" "$WORK"/out.*
  echo "load after ${size} MB runs: $(uptime)" >&2
done

echo
echo "| pipeline | input MB | wall s | MB/s (wall) | CPU s | MB/s per CPU-s | peak RSS MB | compression |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}" | awk -F'\t' '{
  name = $1; gsub(/\|/, "\\|", name)
  printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", name, $2, $3, $4, $5, $6, $7, $8 }'

# shipgate against each baseline of the same size: >1 means shipgate is faster (MB/s) or,
# for RSS, uses more memory.
SG_WRITE="shipgate BackupWriter (zstd 3 + AES-256-GCM + SHA-256)"
SG_VERIFY="restore: shipgate verify (GCM tags + zstd + SHA-256 + JSON per record)"
echo
echo "| input MB | comparison | MB/s (wall) ratio | MB/s per CPU-s ratio | peak RSS ratio |"
echo "|---:|---|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}" | awk -F'\t' -v sg="$SG_WRITE" -v sv="$SG_VERIFY" '
  { name[NR] = $1; size[NR] = $2; wall[$2, $1] = $4; cpu[$2, $1] = $6; rss[$2, $1] = $7 }
  END {
    for (i = 1; i <= NR; i++) {
      n = name[i]; s = size[i]
      if (n == sg || n == sv) continue
      ref = (n ~ /^restore:/) ? sv : sg
      label = ((n ~ /^restore:/) ? "shipgate verify vs " : "shipgate write vs ") n
      gsub(/\|/, "\\|", label)
      printf "| %s | %s | %.2f | %.2f | %.2f |\n", s, label, wall[s, ref] / wall[s, n], cpu[s, ref] / cpu[s, n], rss[s, ref] / rss[s, n]
    }
  }'
