#!/usr/bin/env bash
# Check the system packages listed in scripts/sysdeps.txt, and install the missing ones.
#
#   scripts/sysdeps.sh [demo|test|all]      (`make sysdeps` runs it with `all`)
#
# What happens to a missing package is set by LLMTOOLS_SYSDEPS:
#   install (default)  install it with apt-get when running as root or when `sudo -n` works;
#                      otherwise print one line with the exact command to run, and exit 1
#   check              never install: name what is missing and exit 1
#   warn               never install: name what is missing and exit 0 (the tests that need it
#                      are skipped, each saying which package it lacks)
# Nothing is skipped silently: every missing package is named on stderr.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
target=${1:-all}
mode=${LLMTOOLS_SYSDEPS:-install}
case "$target" in demo|test|all) ;; *) echo "usage: $0 [demo|test|all]" >&2; exit 2 ;; esac
case "$mode" in install|check|warn) ;; *) echo "sysdeps: LLMTOOLS_SYSDEPS must be install, check or warn, not '$mode'" >&2; exit 2 ;; esac
what=$([ "$target" = all ] && echo "llmtools" || echo "make $target")

# A WordNet 3.0 dictionary where llmtools looks for one (llmtools.ops.augment's WordNet loader):
# $LLMTOOLS_WORDNET_DIR or a system folder with data.* and index.sense, or NLTK's own corpus.
have_wordnet() {
  local d
  for d in ${LLMTOOLS_WORDNET_DIR:+"$LLMTOOLS_WORDNET_DIR"} /usr/share/wordnet /usr/local/share/wordnet \
           /usr/lib/wordnet /opt/homebrew/share/wordnet; do
    [ -e "$d/index.sense" ] && [ -e "$d/data.noun" ] && return 0
  done
  local IFS=:
  for d in ${NLTK_DATA:-} "$HOME/nltk_data" /usr/share/nltk_data /usr/local/share/nltk_data \
           /usr/lib/nltk_data /usr/local/lib/nltk_data; do
    [ -n "$d" ] && { [ -e "$d/corpora/wordnet/index.sense" ] || [ -e "$d/corpora/wordnet.zip" ]; } && return 0
  done
  return 1
}

# A Java runtime of at least version $1 (`java -version` prints e.g. 'openjdk version "17.0.15"').
have_java() {
  local java=java version
  [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ] && java="$JAVA_HOME/bin/java"
  version=$("$java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1) || return 1
  [ -n "$version" ] && [ "$version" -ge "$1" ]
}

check() {
  case "$1" in
    command:*) command -v "${1#command:}" >/dev/null 2>&1 ;;
    wordnet) have_wordnet ;;
    java:*) have_java "${1#java:}" ;;
    *) echo "sysdeps: unknown check '$1' in scripts/sysdeps.txt" >&2; exit 2 ;;
  esac
}

trim() { local s=$1; s=${s#"${s%%[![:space:]]*}"}; printf '%s' "${s%"${s##*[![:space:]]}"}"; }

missing_names=() missing_checks=() missing_pkgs=()
while IFS='|' read -r name targets chk pkgs _uses; do
  name=$(trim "$name")
  case "$name" in ''|'#'*) continue ;; esac
  targets=$(trim "$targets") chk=$(trim "$chk") pkgs=$(trim "$pkgs")
  if [ "$target" != all ] && [[ ",$targets," != *",$target,"* ]]; then continue; fi
  if ! check "$chk"; then
    missing_names+=("$name") missing_checks+=("$chk")
    read -r -a words <<<"$pkgs"
    missing_pkgs+=("${words[@]}")
  fi
done <"$here/sysdeps.txt"

[ ${#missing_names[@]} -eq 0 ] && exit 0

names=$(IFS=,; echo "${missing_names[*]}")
names=${names//,/, }
pkgs="${missing_pkgs[*]}"

if [ "$mode" = install ] && command -v apt-get >/dev/null 2>&1; then
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo=(sudo -n); else sudo=(none); fi
  fi
  if [ "${sudo[*]}" != none ]; then
    echo "sysdeps: installing $pkgs (for $names)" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq >/dev/null
    # --reinstall: a package dpkg lists as installed but whose files are gone is put back too.
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends --reinstall $pkgs >/dev/null
    still=()
    for i in "${!missing_names[@]}"; do check "${missing_checks[$i]}" || still+=("${missing_names[$i]}"); done
    if [ ${#still[@]} -gt 0 ]; then
      echo "sysdeps: installed $pkgs, but still missing: ${still[*]}" >&2
      exit 1
    fi
    exit 0
  fi
fi

if command -v apt-get >/dev/null 2>&1; then
  fix="sudo apt-get install -y $pkgs"
else
  fix="install the equivalents of the Debian packages $pkgs with your package manager (see scripts/sysdeps.txt)"
fi
case "$mode" in
  warn)
    echo "sysdeps: missing $names; going on without them (LLMTOOLS_SYSDEPS=warn): what needs them fails or is skipped. To install: $fix" >&2
    exit 0 ;;
  check)
    echo "sysdeps: missing $names. Run: $fix" >&2 ;;
  *)
    echo "sysdeps: missing $names, and this user cannot install packages (not root, no passwordless sudo). Run: $fix   then re-run $what" >&2 ;;
esac
exit 1
