#!/bin/sh
# {{ header }}
# /sbin/aoeroot DEVICE: run from the initqueue until DEVICE exists. Raises the links AoE may use (no IP),
# loads the aoe driver with aoe_iflist, and asks the targets to announce themselves.

PATH=/usr/sbin:/usr/bin:/sbin:/bin
# shellcheck disable=SC1091 # dracut-lib.sh exists only inside the initrd
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh

dev=$1
[ -n "$dev" ] || die "95aoe: usage: aoeroot /dev/etherd/e<shelf>.<slot>"
[ -b "$dev" ] && exit 0

state=/run/initramfs/aoe
mkdir -p "$state"
iflist=$(getarg rd.aoe.iflist=)
mtu=$(getarg rd.aoe.mtu=)
timeout=$(getarg rd.aoe.timeout=)

read -r now _ < /proc/uptime
now=${now%%.*}
if [ ! -e "$state/started" ]; then
    echo "$now" > "$state/started"
    need_shutdown
fi
read -r started < "$state/started"
if [ -n "$timeout" ] && [ $((now - started)) -ge "$timeout" ]; then
    die "95aoe: $dev did not appear within $timeout s (rd.aoe.timeout)"
fi

# is_wanted NAME MAC: is this interface one AoE may use (rd.aoe.iflist names or MACs; default: every Ethernet link)
is_wanted() {
    [ -z "$iflist" ] && return 0
    _rest="$iflist,"
    while [ -n "$_rest" ]; do
        _want=${_rest%%,*}
        _rest=${_rest#*,}
        [ "$_want" = "$1" ] && return 0
        [ "$(str_replace "$_want" '-' ':')" = "$2" ] && return 0
    done
    return 1
}

names=
carrier=
for netdir in /sys/class/net/*; do
    [ -e "$netdir/type" ] || continue
    name=${netdir##*/}
    read -r iftype < "$netdir/type"
    if [ "$iftype" != 1 ] || [ "$name" = lo ]; then
        continue
    fi
    read -r mac < "$netdir/address"
    is_wanted "$name" "$mac" || continue
    names="${names:+$names }$name"
    read -r flags < "$netdir/flags"
    if [ $((flags & 1)) -eq 0 ]; then
        [ -n "$mtu" ] && ip link set dev "$name" mtu "$mtu"
        ip link set dev "$name" up
    fi
    # operstate turns "up" only once the kernel has activated the link's transmit queue, after carrier
    read -r operstate < "$netdir/operstate"
    case "$operstate" in up | unknown) carrier=1 ;; esac
done

# has_carrier: is one of the links active? (operstate turns "up" only once the transmit queue is active)
has_carrier() {
    for _name in $names; do
        read -r _state < "/sys/class/net/$_name/operstate"
        case "$_state" in up | unknown) return 0 ;; esac
    done
    return 1
}

# Frames sent before the link is active are lost: wait for it here for up to 3 s (a link just raised is
# usually active within a second), then leave it to the next round of the initqueue.
if [ -z "$carrier" ] && [ -n "$names" ]; then
    tries=30
    while [ "$tries" -gt 0 ] && ! has_carrier; do
        sleep 0.1
        tries=$((tries - 1))
    done
    has_carrier && carrier=1
fi
[ -n "$carrier" ] || exit 0

# aoe_iflist: the driver only listens on these links (no imposter targets on others).
if [ ! -e /sys/module/aoe ]; then
    modprobe aoe aoe_iflist="$names" || die "95aoe: cannot load the aoe driver"
elif [ ! -e "$state/iflist" ] && [ -w /dev/etherd/interfaces ]; then
    echo "$names" > /dev/etherd/interfaces
    : > "$state/iflist"
fi

if [ -w /dev/etherd/discover ]; then
    echo > /dev/etherd/discover
fi
# The target answers within milliseconds: wait for the disk up to 1 s, so that this round of the initqueue
# finds it instead of the next one.
tries=10
while [ "$tries" -gt 0 ] && [ ! -b "$dev" ]; do
    sleep 0.1
    tries=$((tries - 1))
done
exit 0
