# Sourced by scripts/test and scripts/build-bindings: `step NAME` prints a step's header with
# the time and the CPU seconds that this script's finished commands have used so far (the
# shell's cutime and cstime: children's CPU, counted once they are waited for), to see where a
# run's minutes go.
step() {
    printf '\n== %s (%s, %s CPU s so far)\n' "$1" "$(date -u +%H:%M:%S)" \
        "$(awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%d", ($14 + $15) / hz }' "/proc/$$/stat")"
}
