#!/bin/sh
# {{ header }}
# /lib/aoe-lib.sh: the aoe: root spec parser, sourced by the cmdline hook (parse-aoeroot.sh) and by the systemd
# generator (dracut-aoe-generator), so that both read root=aoe:e<shelf>.<slot>[:fstype[:flags]] alike.

# shellcheck disable=SC2034 # aoe_dev, aoe_fstype and aoe_flags are read by the scripts that source this file

# aoe_parse_spec SPEC: split SPEC, an aoe: argument without its "aoe:" (e<shelf>.<slot>[:fstype[:flags]]), into
# aoe_dev=/dev/etherd/e<shelf>.<slot>, aoe_fstype and aoe_flags (each empty when SPEC does not give it).
aoe_parse_spec() {
    aoe_dev=/dev/etherd/${1%%:*}
    aoe_fstype=
    aoe_flags=
    case "$1" in
        *:*)
            _aoe_rest=${1#*:}
            aoe_fstype=${_aoe_rest%%:*}
            case "$_aoe_rest" in
                *:*) aoe_flags=${_aoe_rest#*:} ;;
            esac
            unset _aoe_rest
            ;;
    esac
}
