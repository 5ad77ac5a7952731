# remote-access builder kit: the build's environment and the time left, in the SSH sessions of
# users who debug a build on this machine.
#
# Install as /etc/profile.d/remote-access.sh (login shells), and source it from the first line
# of /etc/bash.bashrc (Debian, Ubuntu; /etc/bashrc elsewhere), before any line that returns for
# non-interactive shells: bash run by sshd for a command reads the bashrc files, not BASH_ENV.
# zsh: source it from /etc/zshenv. Also name it in BASH_ENV and ENV (sshd_config:
#   SetEnv BASH_ENV=/etc/profile.d/remote-access.sh ENV=/etc/profile.d/remote-access.sh)
# for the other shells. Sourced twice, it runs once.
# It reads two files in ${REMOTE_ACCESS_DIR:-/run/remote-access}, which the platform keeps
# current with `remote-access builder-env` while the build runs:
#   env.sh     `export NAME='value'` lines: sourced, so whoever may write it runs code in every
#              user's shell; keep the directory writable only by the platform's agent, and
#              rewrite the file rather than remove it;
#   deadline   read as text only: Unix seconds, the same time in RFC 3339 (UTC), the rule.
# Without them it does nothing. POSIX sh (dash, bash, zsh, ash), harmless under `set -eu`:
# every variable it reads has a default, and no command of it fails the shell.
# Written by remote-access (`remote-access builder-env --print-profile`); do not edit.

if [ -z "${_remote_access_loaded:-}" ]; then
_remote_access_loaded=1

# Applies env.sh when its first line (a digest of the rest) is not the one this environment
# already has. That digest is exported as REMOTE_ACCESS_ENV: a shell or script started from a
# session inherits the variables and keeps them, with the user's own changes, instead of
# setting them back to the build's values.
_remote_access_env() {
    _remote_access_file=${REMOTE_ACCESS_DIR:-/run/remote-access}/env.sh
    _remote_access_head=
    if [ -f "$_remote_access_file" ] && [ -r "$_remote_access_file" ]; then
        IFS= read -r _remote_access_head 2>/dev/null <"$_remote_access_file" || :
    fi
    if [ "$_remote_access_head" != "${REMOTE_ACCESS_ENV:-}" ] || [ -z "${REMOTE_ACCESS_ENV+set}" ]; then
        if [ -n "$_remote_access_head" ]; then
            . "$_remote_access_file"
        fi
        REMOTE_ACCESS_ENV=$_remote_access_head
        export REMOTE_ACCESS_ENV
    fi
}

# Reads the deadline file into _remote_access_until (HH:MM), _remote_access_rule and
# _remote_access_tag (the prompt's prefix); all empty without a valid file. Interactive shells
# only: a file removed between the test and the read costs nothing there.
_remote_access_time() {
    _remote_access_tag=
    _remote_access_until=
    _remote_access_rule=
    _remote_access_minutes=
    _remote_access_at=
    _remote_access_utc=
    _remote_access_file=${REMOTE_ACCESS_DIR:-/run/remote-access}/deadline
    if [ -f "$_remote_access_file" ] && [ -r "$_remote_access_file" ]; then
        { IFS= read -r _remote_access_at && IFS= read -r _remote_access_utc &&
            IFS= read -r _remote_access_rule; } 2>/dev/null <"$_remote_access_file" || :
    fi
    # Only digits reach the arithmetic (a shell evaluates names and subscripts there): no
    # leading zero (octal), at most 12 of them (no overflow).
    case $_remote_access_at in
    '' | 0* | *[!0-9]*) return 0 ;;
    esac
    case $_remote_access_utc in
    [0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]Z) ;;
    *) return 0 ;;
    esac
    _remote_access_now=${EPOCHSECONDS:-}
    case $_remote_access_now in
    '' | *[!0-9]*) _remote_access_now=$(date +%s 2>/dev/null) || : ;;
    esac
    case $_remote_access_now in
    '' | 0* | *[!0-9]*) return 0 ;;
    esac
    if [ "${#_remote_access_at}" -gt 12 ] || [ "${#_remote_access_now}" -gt 12 ]; then
        return 0
    fi
    _remote_access_until=${_remote_access_utc#*T}
    _remote_access_until=${_remote_access_until%:*}
    _remote_access_minutes=$(($_remote_access_at - $_remote_access_now))
    if [ "$_remote_access_minutes" -le 0 ]; then
        _remote_access_minutes=0
        _remote_access_tag='(remote access ended) '
    else
        _remote_access_minutes=$((($_remote_access_minutes + 59) / 60))
        _remote_access_tag="(remote access: $_remote_access_minutes min left) "
    fi
}

# Before each prompt (bash: PROMPT_COMMAND; zsh: precmd): the variables the build exported
# since the last prompt, and the minutes left in front of the prompt. The tag holds only fixed
# text and digits, so neither bash's nor zsh's prompt expansion finds anything in it.
_remote_access_prompt() {
    _remote_access_status=$?
    _remote_access_env
    _remote_access_time
    PS1=${PS1-}
    if [ -n "${_remote_access_shown:-}" ]; then
        PS1=${PS1#"$_remote_access_shown"}
    fi
    _remote_access_shown=$_remote_access_tag
    PS1=$_remote_access_tag$PS1
    return "$_remote_access_status"
}

case $- in
*i*)
    _remote_access_env
    _remote_access_time
    if [ -n "$_remote_access_until" ]; then
        if [ "$_remote_access_minutes" -gt 0 ]; then
            _remote_access_said="remote access ends at $_remote_access_until UTC (in $_remote_access_minutes min)"
        else
            _remote_access_said="remote access ended at $_remote_access_until UTC"
        fi
        if [ -n "$_remote_access_rule" ]; then
            _remote_access_said="$_remote_access_said: $_remote_access_rule"
        fi
        printf '%s\n%s\n' "$_remote_access_said" \
            "Logging out (exit) after the build steps have completed finishes the build." >&2
    fi
    if [ -n "${BASH_VERSION:-}" ]; then
        case ${PROMPT_COMMAND:-} in
        *_remote_access_prompt*) ;;
        *) PROMPT_COMMAND="_remote_access_prompt${PROMPT_COMMAND:+;$PROMPT_COMMAND}" ;;
        esac
    elif [ -n "${ZSH_VERSION:-}" ]; then
        # zsh syntax, which other shells must not parse.
        eval 'precmd_functions=(${precmd_functions:#_remote_access_prompt} _remote_access_prompt)'
    fi
    ;;
*)
    # A command, not a terminal: the environment once, unless inherited from the session.
    if [ -z "${REMOTE_ACCESS_ENV+set}" ]; then
        _remote_access_env
    fi
    ;;
esac
fi
:
