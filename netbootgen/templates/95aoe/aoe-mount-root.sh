#!/bin/sh
# {{ header }}
# mount hook (sourced by dracut's shell init; a systemd initrd has systemd-fsck-root and sysroot.mount instead):
# the AoE root is checked while unmounted, then mounted once. rootfs-block's mount-root.sh (mount hook 99) mounts
# the root read-only to read its /etc/fstab and /fastboot, unmounts it for fsck and mounts it again: about 1 s
# more under TCG. This hook reads the command line only: rootflags=/ro/rw (rflags), rd.skipfsck, fastboot and
# fsck.mode=skip (no check), forcefsck and fsck.mode=force (a forced check). The root's own /etc/fstab is left to
# its init (systemd-remount-fs, checkroot). A root that is not on /dev/etherd, one with root.journaldev=, or a
# mount that fails, is left to mount-root.sh.

# shellcheck disable=SC2154 # root, fstype, rflags and NEWROOT are set by dracut's init
# shellcheck disable=SC1091 # dracut-lib.sh and fs-lib.sh exist only inside the initrd
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh
type det_fs > /dev/null 2>&1 || . /lib/fs-lib.sh

# aoe_check_root DEV FS: fsck_single, unless the command line or the mount options say not to
aoe_check_root() {
    fsck_able "$2" || return 0
    getargbool 0 rd.skipfsck && return 0
    getargbool 0 fastboot && return 0
    _aoe_fsckmode=$(getarg fsck.mode=)
    [ "$_aoe_fsckmode" = skip ] && return 0
    strstr ",$rflags," ",_netdev," && return 0
    _aoe_fsckopts=
    if [ "$_aoe_fsckmode" = force ] || getargbool 0 forcefsck; then
        # one word: fs-lib passes the options as one argument, and e2fsck takes "-a -f" for an unknown option
        case "$2" in ext?) _aoe_fsckopts=-pf ;; esac
    fi
    fsck_single "$1" "$2" "$rflags" "$_aoe_fsckopts"
    unset _aoe_fsckmode _aoe_fsckopts
}

# root.journaldev= (an external journal) is mount-root.sh's
if [ -z "$aoe_mount_tried" ] && [ "${root#block:/dev/etherd/}" != "$root" ] && [ -z "$(getarg root.journaldev=)" ]; then
    aoe_mount_tried=1 # init.sh sources the mount hooks again while the root is not mounted: one try is ours
    aoe_rootdev=${root#block:}
    aoe_rootfs=$(det_fs "$aoe_rootdev" "$fstype")
    aoe_check_root "$aoe_rootdev" "$aoe_rootfs"
    if mount -t "$aoe_rootfs" -o "${rflags:-defaults}" "$aoe_rootdev" "$NEWROOT"; then
        echo "$aoe_rootdev $NEWROOT $aoe_rootfs ${rflags:-defaults} 0 0" >> /etc/fstab
        info "95aoe: mounted $aoe_rootdev ($aoe_rootfs) with -o ${rflags:-defaults}"
    else
        warn "95aoe: could not mount $aoe_rootdev ($aoe_rootfs) with -o ${rflags:-defaults}; mount-root.sh tries next"
    fi
    unset aoe_rootdev aoe_rootfs
fi
