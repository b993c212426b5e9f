#!/bin/sh
# {{ header }}
# cmdline hook (sourced): root=aoe:e<shelf>.<slot>[:fstype[:flags]], root=/dev/etherd/e<shelf>.<slot>[p<n>]
# or netroot=aoe:...; options rd.aoe.iflist=, rd.aoe.mtu=, rd.aoe.timeout= (read by /sbin/aoeroot).

# shellcheck disable=SC2034 # root, rootok, fstype and rflags are read by dracut after this hook
# shellcheck disable=SC1091 # dracut-lib.sh exists only inside the initrd
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh
# shellcheck source-path=SCRIPTDIR source=aoe-lib.sh # installed by module-setup.sh
type aoe_parse_spec > /dev/null 2>&1 || . /lib/aoe-lib.sh

[ -z "$root" ] && root=$(getarg root=)
[ -z "$netroot" ] && netroot=$(getarg netroot=)

aoedev=
case "$root" in
    aoe:*)
        netroot=$root
        ;;
    /dev/etherd/* | block:/dev/etherd/*)
        aoedev=${root#block:}
        ;;
esac

if [ "${netroot%%:*}" = "aoe" ]; then
    aoe_parse_spec "${netroot#aoe:}"
    aoedev=$aoe_dev
    [ -n "$aoe_fstype" ] && fstype=$aoe_fstype
    [ -n "$aoe_flags" ] && rflags=${rflags:+$rflags,}$aoe_flags
fi

if [ -n "$aoedev" ]; then
    aoetarget=${aoedev#/dev/etherd/}
    aoeshelf=${aoetarget%%.*}
    aoeshelf=${aoeshelf#e}
    aoeslot=${aoetarget#*.}
    aoeslot=${aoeslot%%p*}
    case "$aoetarget" in
        e*.*) ;;
        *) die "95aoe: cannot parse AoE target '$aoetarget' (expected e<shelf>.<slot>, e.g. e0.1)" ;;
    esac
    case "$aoeshelf$aoeslot" in
        "" | *[!0-9]*) die "95aoe: cannot parse AoE target '$aoetarget' (expected e<shelf>.<slot>, e.g. e0.1)" ;;
    esac
    [ -z "$aoeshelf" ] || [ -z "$aoeslot" ] && die "95aoe: AoE target '$aoetarget' lacks a shelf or a slot"

    root="block:$aoedev"
    rootok=1
    # straight to the kernel log, so that it reaches the console with or without systemd
    echo "<29>95aoe: root on $aoedev (AoE shelf $aoeshelf slot $aoeslot), starting discovery" > /dev/kmsg
    # Repeated (not --onetime) until the disk shows up; no udevadm settle here: udevd may not answer yet.
    /sbin/initqueue --settled --unique --name aoeroot /sbin/aoeroot "$aoedev"
    wait_for_dev -n "$aoedev"
fi
unset aoedev aoetarget aoeshelf aoeslot aoe_dev aoe_fstype aoe_flags
