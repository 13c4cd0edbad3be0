#!/bin/sh
# /init of the OpenStack++ test guest (busybox sh; see stack/guest/build.sh).
#
# As PID 1 it mounts proc/sys/devtmpfs, a 64 MiB tmpfs on /run, loads the virtio modules listed
# in /etc/modules, mounts /dev/vda (ext4, rw) on /mnt, then runs:
#   - a tick loop: every second n=n+1, written to /run/tick and printed as "tick N" on ttyS0;
#   - network hotplug: a busybox `uevent` netlink listener calls "/init uevent" for every kernel
#     event; an added NIC (at boot or hot-plugged later) gets `udhcpc -i IF` in the background.
#     (The kernel has CONFIG_UEVENT_HELPER off, so /proc/sys/kernel/hotplug does not exist.)
#     Interfaces already present at boot are found by a scan of /sys/class/net.
#   - one long-lived command shell on ttyS1 ("/init cmdloop"), restarted if it ever dies.
#
# Command protocol on ttyS1 (raw mode, no echo), one request per line:
#   host -> guest:  "\n__C__ <id> <base64 of the command text>\n"
#   guest -> host:  "__B__<id>\n" <stdout+stderr of the command> "\n__E__<id> <exit code>\n"
# The command is `eval`ed in the loop's own shell, so variables, cwd, functions persist from one
# command to the next (and across a save/restore of the VM, which keeps guest memory). Its stdin
# is /dev/null. A syntax error is caught beforehand with `sh -n` (rc 2, shell survives). A command
# that makes the shell itself exit (`exit`, `. missing`, `set -e` + failure, `exec 3<missing`)
# still gets its "__E__<id> <rc>" line (EXIT trap), but the shell is restarted and its state lost.
# Lines not starting with "__C__ " are ignored.

PATH=/bin:/sbin:/usr/bin:/usr/sbin
export PATH

# ---------------------------------------------------------------------------------------------
# Helper modes (this file is also the uevent handler, the udhcpc script and the command loop).
# ---------------------------------------------------------------------------------------------
start_dhcp() {  # IF
  _if=$1
  case "$_if" in lo|"" ) return 0 ;; esac
  mkdir -p /run/net
  mkdir "/run/net/$_if" 2>/dev/null || return 0      # atomic: one udhcpc per interface
  ip link set "$_if" up 2>/dev/null
  echo "net: $_if appeared, starting udhcpc" >/dev/ttyS0
  udhcpc -f -i "$_if" -s /etc/udhcpc.script -p "/run/net/$_if/udhcpc.pid" -t 5 -T 2 -A 3 \
    </dev/null >"/run/net/$_if/udhcpc.log" 2>&1 &
  echo $! >"/run/net/$_if/pid"
}

if [ $$ != 1 ]; then
  case "$1" in
  uevent)
    # Called by `uevent` with the event in the environment.
    [ "$SUBSYSTEM" = net ] || exit 0
    case "$ACTION" in
      add) start_dhcp "$INTERFACE" ;;
      remove)
        if [ -d "/run/net/$INTERFACE" ]; then
          kill "$(cat "/run/net/$INTERFACE/pid" 2>/dev/null)" 2>/dev/null
          rm -rf "/run/net/$INTERFACE"
          echo "net: $INTERFACE removed" >/dev/ttyS0
        fi ;;
    esac
    exit 0 ;;
  udhcpc)
    # udhcpc event script: "/init udhcpc EVENT" with ip, mask, router, dns... in the environment.
    shift
    case "$1" in
      deconfig)
        ip link set "$interface" up
        ip -4 addr flush dev "$interface" ;;
      bound|renew)
        if ! ip -4 addr show dev "$interface" | grep -q " $ip/"; then
          ip -4 addr flush dev "$interface"
          ip addr add "$ip/${mask:-24}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
        fi
        if [ -n "$router" ]; then
          ip route del default dev "$interface" 2>/dev/null
          for r in $router; do ip route add default via "$r" dev "$interface" && break; done
        fi
        if [ -n "$dns" ]; then
          for d in $dns; do echo "nameserver $d"; done >/etc/resolv.conf
        fi
        mkdir -p "/run/net/$interface"
        echo "$ip" >"/run/net/$interface/ip"
        echo "net: $interface $1 $ip/${mask:-24} router ${router:-none}" >/dev/ttyS0 ;;
    esac
    exit 0 ;;
  cmdloop)
    __id=none
    trap 'printf "\n__E__%s %s\n" "$__id" "$?"' EXIT
    printf '\n__READY__\n'
    while :; do
      IFS=' ' read -r __tag __id __b64 __rest || { __id=none; sleep 1; continue; }
      [ "$__tag" = "__C__" ] || { __id=none; continue; }
      __cmd=$(printf %s "$__b64" | base64 -d 2>/dev/null)
      printf '__B__%s\n' "$__id"
      if sh -n -c "$__cmd" 2>&1; then
        eval "$__cmd" </dev/null 2>&1
        __rc=$?
      else
        __rc=2
      fi
      printf '\n__E__%s %s\n' "$__id" "$__rc"
      __id=none
    done ;;
  esac
  echo "usage: /init [uevent|udhcpc EVENT|cmdloop]" >&2
  exit 2
fi

# ---------------------------------------------------------------------------------------------
# PID 1: boot.
# ---------------------------------------------------------------------------------------------
mkdir -p /proc /sys /dev /run /mnt /tmp /etc /var
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=64m,mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
ln -sf /run /var/run
hostname cltest-guest
ip link set lo up

# udhcpc calls its script with the event as $1: a tiny wrapper that dispatches into this file.
printf '#!/bin/sh\nexec /init udhcpc "$@"\n' >/etc/udhcpc.script
chmod 0755 /etc/udhcpc.script

# Listen for hotplug events before any NIC driver is loaded.
uevent /init uevent </dev/null >/dev/null 2>&1 &

while read -r ko; do
  [ -n "$ko" ] && insmod "$ko" 2>/dev/null
done </etc/modules

i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
if mount -t ext4 -o rw /dev/vda /mnt; then
  echo "init: /dev/vda mounted on /mnt" >/dev/ttyS0
else
  echo "init: could not mount /dev/vda" >/dev/ttyS0
fi

# NICs present at boot (the uevent listener may race with the driver: start_dhcp is idempotent).
for n in /sys/class/net/*; do start_dhcp "${n##*/}"; done

# Tick loop: proves memory (and this loop) survive save/restore; /run/tick is replaced atomically.
(
  n=0
  echo "$n" >/run/tick
  while :; do
    sleep 1
    n=$((n + 1))
    echo "$n" >/run/tick.new && mv /run/tick.new /run/tick
    echo "tick $n"
  done
) </dev/null >/dev/ttyS0 2>&1 &

echo "init: ready ($(cut -d' ' -f1 /proc/uptime)s)" >/dev/ttyS0

# The command shell on ttyS1, restarted if a command made it exit.
while :; do
  stty -F /dev/ttyS1 115200 raw -echo 2>/dev/null
  /bin/sh /init cmdloop </dev/ttyS1 >/dev/ttyS1 2>&1
  echo "init: command shell exited, restarting" >/dev/ttyS0
  sleep 0.2
done
