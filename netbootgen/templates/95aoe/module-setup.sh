#!/bin/bash
# {{ header }}
# 95aoe: mount the root file system from an ATA-over-Ethernet disk (root=aoe:e<shelf>.<slot>).

# shellcheck disable=SC2154 # set by dracut: moddir, initdir, hostonly(_cmdline), host_fs_types, dracutbasedir, ...

# called by dracut
check() {
    require_binaries ip || return 1
    # hostonly: only when / sits on an AoE disk (block major 152); otherwise only when asked for
    if [[ $hostonly ]]; then
        for_each_host_dev_and_slaves block_is_aoe || return 255
        return 0
    fi
    return 255
}

# called by dracut
depends() {
    local _dir
    echo rootfs-block
    # dracut-ng >= 107 installs the initqueue only when a module asks for it; 059 and 106 have it in 99base
    for _dir in "$dracutbasedir"/modules.d/[0-9][0-9]initqueue; do
        [[ -d $_dir ]] && echo initqueue
    done
    return 0
}

# called by dracut
installkernel() {
    # -c: a kernel without the aoe driver fails the build, not the boot
    hostonly='' instmods -c aoe
{% if nic_drivers %}
    hostonly='' instmods {{ nic_drivers }}
{% endif %}
    # the root file systems: hostonly, this machine's (dracut's host_fs_types); else the fleet's fstypes
    if [[ $hostonly && ${host_fs_types[*]} ]]; then
        hostonly='' instmods "${host_fs_types[@]}"
    else
        hostonly='' instmods {{ fs_modules }}
    fi
    return 0
}

# called by dracut
# netroot=, not root=: rootfs-block writes the root= of a hostonly build (95root-dev.conf in dracut 059 and
# dracut-ng 106, 20-root-dev.conf in later dracut-ng), and whichever of two root= sorts last would win.
# parse-aoeroot.sh starts AoE discovery for netroot=aoe:... and leaves a root= it is given alone.
cmdline() {
    local _majmin _sys _name _fstype
    _majmin=$(find_root_block_device)
    [[ $_majmin == 152:* ]] || return 0
    _sys=$(readlink -f "/sys/dev/block/$_majmin")
    _name=${_sys##*/}
    _fstype=$(find_mp_fstype /)
    printf ' netroot=aoe:%s%s' "${_name#etherd!}" "${_fstype:+:$_fstype}"
}

# called by dracut
install() {
    inst_multiple ip
    inst_simple "$moddir/aoe-lib.sh" "/lib/aoe-lib.sh"
    inst_hook cmdline 90 "$moddir/parse-aoeroot.sh"
    inst_script "$moddir/aoeroot.sh" /sbin/aoeroot
    inst_hook shutdown 40 "$moddir/aoe-shutdown.sh"
    if dracut_module_included "systemd"; then
        inst_script "$moddir/aoe-generator.sh" "$systemdutildir/system-generators/dracut-aoe-generator"
    else
        # before rootfs-block's mount-root.sh (mount 99): one fsck, then one mount
        inst_hook mount 90 "$moddir/aoe-mount-root.sh"
        # udev-rules installs 71-seat.rules, whose one RUN of loginctl (lock the sessions) would bring in
        # libsystemd-shared and libgcrypt (5 MB); the systemd module puts true in its place, and so do we.
        ln_r "$(find_binary true)" "/usr/bin/loginctl"
        ln_r "$(find_binary true)" "/bin/loginctl"
    fi
    if [[ $hostonly_cmdline == "yes" ]]; then
        local _root
        _root=$(cmdline)
        [[ $_root ]] && printf '%s\n' "$_root" > "${initdir}/etc/cmdline.d/95aoe.conf"
    fi
    # aoe must load only once the links are up (aoeroot does it, with aoe_iflist): a config reply taken
    # before the link's queue is active makes the driver's first IDENTIFY vanish, and the retry comes ~17 s later.
    rm -f -- "${initdir}/usr/lib/modules-load.d/aoetools.conf" "${initdir}/etc/modules-load.d/aoetools.conf"
    dracut_need_initqueue
}

block_is_aoe() {
    [[ $1 == 152:* ]]
}
