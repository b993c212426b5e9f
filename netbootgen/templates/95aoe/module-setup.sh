#!/bin/bash
# {{ header }}
# 95aoe: mount the root file system from an ATA-over-Ethernet disk (root=aoe:e<shelf>.<slot>).

# shellcheck disable=SC2154 # moddir, initdir, hostonly_cmdline and systemdutildir are set by dracut

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
    echo rootfs-block
    return 0
}

# called by dracut
installkernel() {
    hostonly='' instmods aoe {{ nic_drivers }}
}

# called by dracut
cmdline() {
    local _majmin _sys _name
    _majmin=$(find_root_block_device)
    [[ $_majmin == 152:* ]] || return 0
    _sys=$(readlink -f "/sys/dev/block/$_majmin")
    _name=${_sys##*/}
    printf ' root=/dev/etherd/%s' "${_name#etherd!}"
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
