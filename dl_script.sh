#!/usr/bin/env bash
# Download VoxCeleb1 into the layout data_preprocess.py reads:
#   DATA_DIR/dev/wav, DATA_DIR/test/wav, vox1_meta.csv, iden_split.txt, veri_test.txt
#
# Usage: bash dl_script.sh USERNAME PASSWORD [DATA_DIR]
#    or: VOXCELEB_USER=... VOXCELEB_PASSWORD=... bash dl_script.sh [DATA_DIR]
# The username and password are the ones the VoxCeleb team sends on request. DATA_DIR defaults to the current
# folder. About 40 GB of archives are downloaded and about 40 GB unpacked.
#
# Environment:
#   VOXCELEB_AUDIO_URL        where the archives are (default https://thor.robots.ox.ac.uk/~vgg/data/voxceleb/vox1a)
#   VOXCELEB_META_URL         where the lists are (default https://www.robots.ox.ac.uk/~vgg/data/voxceleb/meta)
#   VOXCELEB_SKIP_CHECKSUMS=1 do not check the archives' SHA-256 (for a mirror that repacked them)
#
# Rerunning after a failure resumes: partial downloads continue, finished steps are not repeated.
set -euo pipefail

AUDIO_URL="${VOXCELEB_AUDIO_URL:-https://thor.robots.ox.ac.uk/~vgg/data/voxceleb/vox1a}"
META_URL="${VOXCELEB_META_URL:-https://www.robots.ox.ac.uk/~vgg/data/voxceleb/meta}"
DEV_PARTS=(vox1_dev_wav_partaa vox1_dev_wav_partab vox1_dev_wav_partac vox1_dev_wav_partad)
DEV_ZIP=vox1_dev_wav.zip
TEST_ZIP=vox1_test_wav.zip
LISTS=(vox1_meta.csv iden_split.txt veri_test.txt)
# SHA-256 of the official archives.
expected_checksum() {
    case "$1" in
        vox1_dev_wav_partaa) echo 21ec6ca843659ebc2fdbe04b530baa4f191ad4b0971912672d92c158f32226a0 ;;
        vox1_dev_wav_partab) echo 311d21e0c8cbf33573a4fce6c80e5a279d80736274b381c394319fc557159a04 ;;
        vox1_dev_wav_partac) echo 92b64465f2b2a3dc0e4196ae8dd6828cbe9ddd1f089419a11e4cbfe2e1750df0 ;;
        vox1_dev_wav_partad) echo 00e6190c770b27f27d2a3dd26ee15596b17066b715ac111906861a7d09a211a5 ;;
        vox1_test_wav.zip) echo 8de57f347fe22b2c24526e9f444f689ecf5096fc2a92018cf420ff6b5b15eaea ;;
        *) return 1 ;;
    esac
}

fail() {
    echo "dl_script.sh: error: $*" >&2
    exit 1
}

usage() {
    echo "usage: bash dl_script.sh USERNAME PASSWORD [DATA_DIR]" >&2
    echo "   or: VOXCELEB_USER=... VOXCELEB_PASSWORD=... bash dl_script.sh [DATA_DIR]" >&2
    exit 2
}

if [[ $# -ge 2 ]]; then
    user="$1"
    password="$2"
    data_dir="${3:-.}"
    [[ $# -le 3 ]] || usage
elif [[ -n "${VOXCELEB_USER:-}" && -n "${VOXCELEB_PASSWORD:-}" ]]; then
    user="$VOXCELEB_USER"
    password="$VOXCELEB_PASSWORD"
    data_dir="${1:-.}"
else
    usage
fi
[[ -n "$user" && -n "$password" ]] || usage

for tool in wget unzip cat; do
    command -v "$tool" > /dev/null || fail "'$tool' is needed but not installed"
done
if command -v sha256sum > /dev/null; then
    sha256() { sha256sum "$1" | cut -d ' ' -f 1; }
elif command -v shasum > /dev/null; then
    sha256() { shasum -a 256 "$1" | cut -d ' ' -f 1; }
elif [[ "${VOXCELEB_SKIP_CHECKSUMS:-0}" != 1 ]]; then
    fail "neither sha256sum nor shasum is installed (or set VOXCELEB_SKIP_CHECKSUMS=1)"
fi

mkdir -p "$data_dir" || fail "cannot create $data_dir"
cd "$data_dir" || fail "cannot enter $data_dir"

# The credentials reach wget through a private config file, not its command line, which other users can see.
wgetrc="$(mktemp)"
pids=()
cleanup() {
    for pid in ${pids[@]+"${pids[@]}"}; do
        kill "$pid" 2> /dev/null || true
    done
    rm -f "$wgetrc"
}
trap cleanup EXIT
chmod 600 "$wgetrc"
printf 'user = %s\npassword = %s\n' "$user" "$password" > "$wgetrc"

verify() {
    local file="$1"
    [[ "${VOXCELEB_SKIP_CHECKSUMS:-0}" == 1 ]] && return 0
    local actual expected
    expected="$(expected_checksum "$file")"
    actual="$(sha256 "$file")" || fail "cannot read $file"
    [[ "$actual" == "$expected" ]] || fail "$file is corrupt (SHA-256 $actual, expected $expected); delete it and run again"
}

# ----- the archives, downloaded in parallel -----
downloads=()
[[ -f "$DEV_ZIP" ]] || downloads+=("${DEV_PARTS[@]}")
[[ -f "$TEST_ZIP" && -f .vox1_test_checked ]] || downloads+=("$TEST_ZIP")
for file in ${downloads[@]+"${downloads[@]}"}; do
    echo "downloading $AUDIO_URL/$file (progress in $file.log)"
    WGETRC="$wgetrc" wget --continue --tries=5 --progress=dot:giga --output-file="$file.log" \
        "$AUDIO_URL/$file" &
    pids+=("$!")
done
failed=()
for index in ${pids[@]+"${!pids[@]}"}; do
    wait "${pids[$index]}" || failed+=("${downloads[$index]}")
done
pids=()
for file in ${failed[@]+"${failed[@]}"}; do
    echo "--- last lines of $file.log:" >&2
    tail -n 5 "$file.log" >&2 || true
done
[[ ${#failed[@]} -eq 0 ]] || fail "download failed: ${failed[*]} (a 401 means a wrong username or password); run again to resume"
for file in ${downloads[@]+"${downloads[@]}"}; do
    [[ -s "$file" ]] || fail "$file is missing or empty after its download"
    verify "$file"
    rm -f "$file.log"
done
[[ -f "$TEST_ZIP" ]] && touch .vox1_test_checked

if [[ ! -f "$DEV_ZIP" ]]; then
    echo "joining ${DEV_PARTS[*]} into $DEV_ZIP"
    cat "${DEV_PARTS[@]}" > "$DEV_ZIP.tmp" || fail "could not join the dev parts (disk full?)"
    mv "$DEV_ZIP.tmp" "$DEV_ZIP"
    rm -f "${DEV_PARTS[@]}"
fi

# ----- unpacking: the archives hold wav/<speaker>/<video>/<NNNNN>.wav -----
unpack() {
    local archive="$1" subset="$2"
    local marker=".vox1_${subset}_unpacked"
    [[ -f "$marker" && -d "$subset/wav" ]] && return 0
    echo "unpacking $archive into $subset/"
    unzip -q -o "$archive" -d "$subset" || fail "could not unpack $archive (corrupt download or disk full?)"
    [[ -d "$subset/wav" ]] || fail "$archive did not contain a wav/ folder"
    touch "$marker"
}
unpack "$DEV_ZIP" dev
unpack "$TEST_ZIP" test

# ----- the lists -----
for list in "${LISTS[@]}"; do
    echo "downloading $META_URL/$list"
    wget --quiet --tries=5 --output-document="$list.tmp" "$META_URL/$list" \
        || { rm -f "$list.tmp"; fail "could not download $META_URL/$list"; }
    [[ -s "$list.tmp" ]] || { rm -f "$list.tmp"; fail "$META_URL/$list is empty"; }
    mv "$list.tmp" "$list"
done

dev_speakers="$(find dev/wav -mindepth 1 -maxdepth 1 -type d | wc -l)"
test_speakers="$(find test/wav -mindepth 1 -maxdepth 1 -type d | wc -l)"
echo "VoxCeleb1 is in $(pwd): $dev_speakers dev and $test_speakers test speakers (expected 1211 and 40)."
echo "$DEV_ZIP and $TEST_ZIP may now be deleted. Next: python data_preprocess.py $(pwd)"
