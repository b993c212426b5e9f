#!/bin/sh
# {{ header }}
# cmdline hook (sourced): root=aoe:e<shelf>.<slot>[:fstype[:flags]], root=/dev/etherd/e<shelf>.<slot>[p<n>]
# or netroot=aoe:...; options rd.aoe.iflist=, rd.aoe.mtu=, rd.aoe.timeout= (read by /sbin/aoeroot).
# netroot=aoe:... beside a block root= (root=UUID=..., root=/dev/...) only starts discovery of that AoE disk: the
# root stays the one root= names, for rootfs-block to mount. Except root=/dev/block/152:<minor>, what a hostonly
# build's rootfs-block writes for an AoE disk (udev gives etherd disks no /dev/disk/by-* name): the aoe driver
# numbers its disks in the order it finds them, so the root is taken from netroot's stable eS.L name instead.

# shellcheck disable=SC2034 # root, rootok, fstype and rflags are read by dracut after this hook
# shellcheck disable=SC2154 # hookdir is set by dracut-lib.sh, DRACUT_SYSTEMD by dracut-cmdline.service
# shellcheck disable=SC1091 # dracut-lib.sh exists only inside the initrd
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh
# shellcheck source-path=SCRIPTDIR source=aoe-lib.sh # installed by module-setup.sh
type aoe_parse_spec > /dev/null 2>&1 || . /lib/aoe-lib.sh

[ -z "$root" ] && root=$(getarg root=)
[ -z "$netroot" ] && netroot=$(getarg netroot=)

aoedev=
aoeroot=
case "$root" in
    aoe:*)
        netroot=$root
        ;;
    /dev/etherd/* | block:/dev/etherd/*)
        aoedev=${root#block:}
        aoeroot=1
        ;;
esac

if [ -z "$aoedev" ] && [ "${netroot%%:*}" = "aoe" ]; then
    aoe_parse_spec "${netroot#aoe:}"
    aoedev=$aoe_dev
    case "$root" in
        block:/dev/block/152:* | /dev/block/152:*)
            aoeroot=1
            # a systemd initrd's dracut-rootfs-generator already waits for that number, which the disk may not
            # get (the driver numbers disks in the order it finds them): wait for netroot's disk instead
            rm -f "$hookdir/initqueue/finished/devexists-$(str_replace "${root#block:}" '/' '\x2f').sh"
            ;;
        block:* | /dev/* | LABEL=* | UUID=* | PARTUUID=* | PARTLABEL=*) ;;
        *) aoeroot=1 ;;
    esac
    if [ -n "$aoeroot" ]; then
        [ -n "$aoe_fstype" ] && fstype=$aoe_fstype
        [ -n "$aoe_flags" ] && rflags=${rflags:+$rflags,}$aoe_flags
    fi
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

    if [ -n "$aoeroot" ]; then
        root="block:$aoedev"
        rootok=1
        aoewhy=
    else
        aoewhy=", root=$root"
    fi
    # straight to the kernel log, so that it reaches the console with or without systemd
    echo "<29>95aoe: root on $aoedev (AoE shelf $aoeshelf slot $aoeslot$aoewhy), starting discovery" > /dev/kmsg
    # The root's file system module loads now, beside udev and the network, not when the mount asks for it
    # (~1 s under TCG). A systemd initrd has the generator's modprobe@ unit for this instead.
    if [ -n "$aoeroot" ] && [ -z "$DRACUT_SYSTEMD" ] && [ -n "$fstype" ] && [ "$fstype" != auto ] \
        && [ "${fstype#*[!a-z0-9_]}" = "$fstype" ]; then
        modprobe -b -q "$fstype" > /dev/null 2>&1 &
    fi
    # Repeated (not --onetime) until the disk shows up; no udevadm settle here: udevd may not answer yet.
    /sbin/initqueue --settled --unique --name aoeroot /sbin/aoeroot "$aoedev"
    wait_for_dev -n "$aoedev"
fi
unset aoedev aoeroot aoewhy aoetarget aoeshelf aoeslot aoe_dev aoe_fstype aoe_flags
