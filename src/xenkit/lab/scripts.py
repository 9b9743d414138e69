"""The shell programs baked into a lab image.

They are Python strings rather than package data so that they are part of the
builder's code hash (a changed init script means a new image) and ship with
the wheel without packaging rules. Everything tunable per boot is read from
the kernel command line, so one cached image serves every configuration.
"""

from __future__ import annotations

#: Printed on the serial console once ``xl info`` answers; Machine waits for it.
READY_MARKER = "XENKIT-LAB-READY"
#: Printed when bring-up cannot continue; Machine reports the lines around it.
FAILED_MARKER = "XENKIT-LAB-FAILED"
#: The guest kit's init prints this line on every console it has.
GUEST_MARKER = "XENKIT-GUEST-UP"

#: The dom0 initramfs: load the disk and ext4 drivers (modules in the generic
#: kernel), mount the root disk, switch to it.
STAGE1_INIT = r"""#!/bin/busybox sh
export PATH=/bin
fail() {
    echo "XENKIT-LAB-FAILED stage1: $*"
    sleep 2
    poweroff -f
}
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
for m in $(cat /lib/modules/order); do
    insmod /lib/modules/$m.ko || fail "insmod $m"
done
root=/dev/vda
for arg in $(cat /proc/cmdline); do
    case $arg in xenkit.root=*) root=${arg#xenkit.root=} ;; esac
done
i=0
while [ ! -b "$root" ]; do
    i=$((i + 1))
    [ $i -gt 1200 ] && fail "no block device $root after 60 s"
    usleep 50000
done
mount -t ext4 -o rw,noatime "$root" /newroot || fail "cannot mount $root"
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
"""

#: busybox init as PID 1 in dom0: it reaps orphans and turns ``poweroff`` into
#: a clean power-off of the whole emulated host.
INITTAB = """\
::sysinit:/usr/lib/xenkit/dom0-boot
hvc0::askfirst:-/bin/sh
::shutdown:/usr/lib/xenkit/dom0-shutdown
::ctrlaltdel:/bin/busybox poweroff
"""

#: The recipe's bring-up, in order, as fast as TCG allows: no service manager,
#: daemons started directly, sshd early so it is up by the time Xen is.
DOM0_BOOT = r"""#!/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
fail() {
    echo "XENKIT-LAB-FAILED dom0: $*"
    exit 1
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -o remount,rw,noatime /
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# udev would make these; Xen's block hotplug script locks through /dev/fd.
ln -sfn /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
hostname -F /etc/hostname

xenstored=oxenstored
sshkey=
ip=198.51.100.15/24
usermac=
bridgeip=192.0.2.1/24
joinmac=
for arg in $(cat /proc/cmdline); do
    case $arg in
    xenkit.xenstored=*) xenstored=${arg#*=} ;;
    xenkit.sshkey=*) sshkey=${arg#*=} ;;
    xenkit.ip=*) ip=${arg#*=} ;;
    xenkit.usermac=*) usermac=${arg#*=} ;;
    xenkit.bridgeip=*) bridgeip=${arg#*=} ;;
    xenkit.joinmac=*) joinmac=${arg#*=} ;;
    xenkit.hostname=*) hostname "${arg#*=}" ;;
    esac
done
# The NIC with a given MAC (names depend on probe order; MACs are on the command line).
nic() {
    for d in /sys/class/net/*; do
        [ "$(cat "$d/address" 2>/dev/null)" = "$1" ] && { echo "${d##*/}"; return 0; }
    done
    return 1
}

modprobe -a virtio_net xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs \
    xen-blkback xen-netback bridge tun loop || fail "modprobe"

ip link set lo up
usernic=eth0
[ -n "$usermac" ] && usernic=$(nic "$usermac")
ip addr add "$ip" dev "$usernic" && ip link set "$usernic" up || echo "xenkit-lab: no user NIC"
mkdir -p /run/sshd /var/log
if [ -n "$sshkey" ]; then
    printf 'ssh-ed25519 %s xenkit-lab\n' "$sshkey" > /etc/ssh/xenkit_authorized_keys
fi
/usr/sbin/sshd -E /var/log/sshd.log || echo "xenkit-lab: sshd did not start"
python3 -I /usr/lib/xenkit/lab-agent.py /run/xenkit/agent.sock \
    < /dev/null > /var/log/xenkit-agent.log 2>&1 &

mount -t xenfs xenfs /proc/xen || fail "mount xenfs"
mkdir -p /run/xen /run/xenstored /var/lib/xen /var/log/xen/console /var/lib/xenstored
export XENSTORED_ROOTDIR=/run/xenstored
case $xenstored in
oxenstored | xenstored) ;;
cxenstored) xenstored=xenstored ;;
*) fail "unknown xenkit.xenstored=$xenstored (use oxenstored or xenstored)" ;;
esac
/usr/lib/xen-4.17/bin/$xenstored --pid-file /run/xenstore.pid || fail "$xenstored"
i=0
until xenstore-exists / 2>/dev/null; do
    i=$((i + 1))
    [ $i -gt 400 ] && fail "xenstored did not answer in 20 s"
    sleep 0.05
done
/usr/lib/xen-4.17/bin/xen-init-dom0 > /var/log/xen/xen-init-dom0.log 2>&1 || fail "xen-init-dom0"
/usr/lib/xen-4.17/bin/xenconsoled --pid-file=/run/xenconsoled.pid --log=guest \
    --log-dir=/var/log/xen/console || fail "xenconsoled"

# The guest bridge; the join NIC is a port of it, so joined labs share one segment.
ip link add xenbr0 type bridge stp_state 0 forward_delay 0 || fail "bridge xenbr0"
ip addr add "$bridgeip" dev xenbr0 || fail "address $bridgeip on xenbr0"
if [ -n "$joinmac" ]; then
    joinnic=$(nic "$joinmac") || fail "no NIC with the join MAC $joinmac"
    ip link set xenbr0 address "$joinmac"
    ip link set "$joinnic" master xenbr0 up || fail "join NIC $joinnic into xenbr0"
fi
ip link set xenbr0 up

xl info > /run/xenkit-xl-info 2>&1 || fail "xl info: $(tail -n 3 /run/xenkit-xl-info)"
sched=$(sed -n 's/^xen_scheduler *: *//p' /run/xenkit-xl-info)
echo "XENKIT-LAB-READY xenstored=$xenstored sched=$sched uptime=$(cut -d' ' -f1 /proc/uptime)"
"""

DOM0_SHUTDOWN = r"""#!/bin/sh
for pid in /run/xenconsoled.pid /run/xenstore.pid; do
    [ -f $pid ] && kill "$(cat $pid)" 2>/dev/null
done
sync
"""

SSHD_CONFIG = """\
HostKey /etc/ssh/ssh_host_ed25519_key
AuthorizedKeysFile /etc/ssh/xenkit_authorized_keys .ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
MaxSessions 256
MaxStartups 64:30:256
LogLevel ERROR
"""

#: The guest kit's init: says which kind of guest it booted as, on every
#: console it has, then powers off (or stays up with ``xenkit.hold``). With
#: ``xenkit.agent`` it loads the block and network frontends first and then
#: serves commands on its console (see ``xenkit.dom0.console``).
GUEST_INIT = r"""#!/bin/busybox sh
export PATH=/bin
/bin/busybox --install -s /bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /tmp && mount -t tmpfs tmpfs /tmp
cmdline=" $(cat /proc/cmdline) "
case "$cmdline" in
*" xenkit.agent "*) for m in /lib/modules/*.ko; do insmod "$m"; done ;;
esac
kind=$(cat /sys/hypervisor/guest_type 2>/dev/null || echo unknown)
line="XENKIT-GUEST-UP type=$kind kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)"
for tty in /dev/hvc0 /dev/ttyS0; do
    [ -c $tty ] && echo "$line" > $tty 2>/dev/null
done
case "$cmdline" in
*" xenkit.agent "*) exec /bin/xenkit-agent </dev/hvc0 >/dev/hvc0 2>&1 ;;
*" xenkit.hold "*) while :; do sleep 3600; done ;;
esac
poweroff -f
"""

#: The guest side of the console command channel: one request per line,
#: ``ID BASE64-COMMAND``; the answer is ``XENKIT-BEGIN ID``, the command's
#: output as base64 lines, then ``XENKIT-DONE ID STATUS``. Base64 both ways
#: keeps the console's line discipline and the kernel's own messages out of
#: the data.
GUEST_AGENT = r"""#!/bin/sh
stty -echo
echo "XENKIT-AGENT-READY"
while IFS=' ' read -r id command; do
    [ -n "$id" ] || continue
    echo "XENKIT-BEGIN $id"
    echo "$command" | base64 -d > /tmp/.cmd 2>/dev/null
    sh /tmp/.cmd </dev/null > /tmp/.out 2>&1
    status=$?
    base64 < /tmp/.out
    echo "XENKIT-DONE $id $status"
done
"""
