#!/usr/bin/env bash
# Ensure a PostgreSQL (or router) Docker image exists locally, without needing a container registry.
#
# Usage: scripts/provision-image.sh [IMAGE]        (default IMAGE: postgres:16)
#        scripts/provision-image.sh --local 15|17  (ensure pg-cluster-postgres:<major>)
#        scripts/provision-image.sh --local router (ensure pg-cluster-haproxy:2.6)
#        scripts/provision-image.sh --local pgadmin (ensure pg-cluster-pgadmin:9.18)
# Prints the image name on stdout when it is ready; everything else goes to stderr.
#
# IMAGE present -> nothing to do. Otherwise:
#  - our local names are built from Debian packages with debootstrap (no registry):
#      pg-cluster-postgres:15  Debian bookworm, postgresql-15
#      pg-cluster-postgres:17  Debian trixie,   postgresql-17
#      pg-cluster-haproxy:2.6  Debian bookworm, haproxy (the cluster's router)
#      pg-cluster-pgadmin:9.18 Debian bookworm, python3 + pgadmin4 9.18 and gunicorn from PyPI
#                              (downloaded by the host's pip, installed offline in the rootfs)
#    The rootfs is cached as $PG_CLUSTER_CACHE/images/<name>-<major>.<recipe>.tar, so a rebuild is
#    only `docker import` (delete the tarball to force a fresh debootstrap).
#  - any other IMAGE is pulled (bounded to ~20 s).
# Exit codes: 0 ready; 3 IMAGE is not local, cannot be pulled and is not one we can build
# (the caller should fall back to pg-cluster-postgres:15); 1 anything else.
#
# Image contract (checked after every build): initdb, postgres, pg_ctl, pg_basebackup, pg_isready,
# psql on PATH; a postgres user and group; /var/run/postgresql writable by postgres; setpriv and
# bash; initdb works with locale C.UTF-8. No ENTRYPOINT: callers give the command.
# Router contract: haproxy 2.6 on PATH, bash; `haproxy -c` accepts a minimal TCP config.
# pgAdmin contract: dpage/pgadmin4's environment (scripts/images/pgadmin-entrypoint.sh), runs as
# uid 5050; checked by creating its database and registering a server in a throwaway container.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LOCAL_REPO=pg-cluster-postgres
ROUTER_IMAGE=pg-cluster-haproxy:2.6
PGADMIN_VERSION=9.18
PGADMIN_IMAGE=pg-cluster-pgadmin:$PGADMIN_VERSION
GUNICORN_VERSION=27.0.1
# Bump when a build recipe changes: older tarballs and images of that kind are then rebuilt.
# r2 of the PostgreSQL images: pgBackRest added (issue 12).
RECIPE_POSTGRES=r2 RECIPE_OTHER=r1
# recipe_for MAJOR — the recipe of one of our images (15, 17, router, pgadmin).
recipe_for() { case "$1" in 15 | 17) echo "$RECIPE_POSTGRES" ;; *) echo "$RECIPE_OTHER" ;; esac; }
PULL_TIMEOUT="${PG_CLUSTER_PULL_TIMEOUT:-20}"
DEBIAN_MIRROR="${PG_CLUSTER_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
EXIT_NOT_BUILDABLE=3

usage() { sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; }

image=""
case "${1:-}" in
  --local)
    case "${2:-}" in
      15|17) image="$LOCAL_REPO:$2" ;;
      router) image="$ROUTER_IMAGE" ;;
      pgadmin) image="$PGADMIN_IMAGE" ;;
      *) usage; die "--local needs 15, 17, router or pgadmin (got '${2:-}'); e.g. scripts/provision-image.sh --local 15" ;;
    esac
    [ "$#" -eq 2 ] || die "too many arguments; usage: scripts/provision-image.sh --local 15|17|router|pgadmin" ;;
  -h|--help) usage; exit 0 ;;
  -*) usage; die "unknown option '$1'" ;;
  *)
    [ "$#" -le 1 ] || die "too many arguments; usage: scripts/provision-image.sh [IMAGE]"
    image="${1:-postgres:16}" ;;
esac

# local_major IMAGE — the PostgreSQL major of one of our buildable names ("router" for the
# router's image), or nothing.
local_major() {
  case "$1" in
    "$LOCAL_REPO:15") echo 15 ;;
    "$LOCAL_REPO:17") echo 17 ;;
    "$ROUTER_IMAGE") echo router ;;
    "$PGADMIN_IMAGE") echo pgadmin ;;
  esac
}
suite_for() { case "$1" in 15 | router | pgadmin) echo bookworm ;; 17) echo trixie ;; esac; }

# image_ok IMAGE — present locally (and, for our own names, built by the current recipe).
image_ok() {
  local label
  label="$(docker image inspect --format '{{index .Config.Labels "pg-cluster.recipe"}}' "$1" 2>/dev/null)" || return 1
  [ -z "$(local_major "$1")" ] || [ "$label" = "$(recipe_for "$(local_major "$1")")" ]
}

done_ok() { printf '%s\n' "$image"; exit 0; }

# PG_CLUSTER_DOCKER_READY=1: the caller has just run provision-docker.sh (saves a `docker info`).
[ -n "${PG_CLUSTER_DOCKER_READY:-}" ] || bash "$(dirname "${BASH_SOURCE[0]}")/provision-docker.sh"

image_ok "$image" && done_ok

major="$(local_major "$image")"

if [ -z "$major" ]; then
  log "image $image is not present locally; trying docker pull (at most ${PULL_TIMEOUT} s)"
  if pull_out="$(timeout "$PULL_TIMEOUT" docker pull "$image" 2>&1)"; then
    log "pulled $image"
    done_ok
  fi
  log "docker pull $image failed: $(printf '%s' "$pull_out" | tail -n 1)"
  log "this script can build these images locally from Debian packages (no registry needed):"
  log "  $LOCAL_REPO:15  (Debian bookworm, PostgreSQL 15)   scripts/provision-image.sh --local 15"
  log "  $LOCAL_REPO:17  (Debian trixie, PostgreSQL 17)     scripts/provision-image.sh --local 17"
  log "  $ROUTER_IMAGE  (Debian bookworm, HAProxy 2.6)    scripts/provision-image.sh --local router"
  log "  $PGADMIN_IMAGE (Debian bookworm, pgAdmin $PGADMIN_VERSION)  scripts/provision-image.sh --local pgadmin"
  printf '[pg-cluster] ERROR: image %s is not available (not local, pull failed) and cannot be built here; use %s:15 or %s:17, or docker load %s first.\n' \
    "$image" "$LOCAL_REPO" "$LOCAL_REPO" "$image" >&2
  exit "$EXIT_NOT_BUILDABLE"
fi

# ---- build one of our local images -------------------------------------------------------------
# (Our names exist on no registry, so no pull is tried for them.)
suite="$(suite_for "$major")"
images_dir="$PG_CLUSTER_CACHE/images"
if [ "$major" = router ]; then
  repo="${ROUTER_IMAGE%%:*}" packages="haproxy" what="HAProxy"
elif [ "$major" = pgadmin ]; then
  repo="${PGADMIN_IMAGE%%:*}" packages="python3,python3-venv,ca-certificates" what="pgAdmin $PGADMIN_VERSION"
else
  repo="$LOCAL_REPO" packages="postgresql-$major,ca-certificates,util-linux,pgbackrest" what="PostgreSQL $major and pgBackRest"
fi
RECIPE="$(recipe_for "$major")"
tarball="$images_dir/$repo-$major.$RECIPE.tar"
root="$images_dir/rootfs-$major.build"
mkdir -p "$images_dir"

# One build per major at a time (two `npm run up` at once, or 15 and 17 in parallel, are fine).
exec 9>"$images_dir/$repo-$major.lock"
if ! flock -n 9; then
  log "another run is building $image; waiting for it"
  flock 9
fi
image_ok "$image" && done_ok   # the other run may have finished it

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# unmount_under DIR — debootstrap mounts /proc, /sys (and may bind /dev) inside the rootfs; an
# interrupted run can leave them. Unmount deepest first before anything is deleted.
unmount_under() {
  local m
  awk -v d="$1" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r |
    while IFS= read -r m; do umount -l "$m" 2>/dev/null || true; done
}
remove_root() {
  [ -e "$root" ] || return 0
  unmount_under "$root"
  rm -rf --one-file-system "$root"
}

# install_pgadmin ROOT — pgAdmin and gunicorn into a venv in ROOT (/venv), the entrypoint, and the
# pgadmin user (uid 5050, group root, as in the official image). The wheels are downloaded by a
# venv on the host (its pip config, certificates and proxy apply; same Debian, same Python), then
# installed in the rootfs without network.
install_pgadmin() {
  local root="$1" venv="$images_dir/pip-host" t0
  apt_install python3-venv
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  log "fetching pgadmin4==$PGADMIN_VERSION and gunicorn==$GUNICORN_VERSION as wheels (host pip, about 1 min)"
  t0="$(now)"
  mkdir -p "$root/tmp/wheels"
  # A find-links entry that does not exist only makes pip warn on every package.
  if [ -n "${PIP_FIND_LINKS:-}" ] && [ ! -e "$PIP_FIND_LINKS" ]; then unset PIP_FIND_LINKS; fi
  # `pip wheel`, not `download`: two of its dependencies are sdists, built here (pure Python).
  "$venv/bin/pip" wheel --quiet --wheel-dir "$root/tmp/wheels" \
    "pgadmin4==$PGADMIN_VERSION" "gunicorn==$GUNICORN_VERSION" ||
    die "pip download of pgadmin4 $PGADMIN_VERSION failed (above); check that PyPI is reachable."
  chroot "$root" python3 -m venv /venv
  chroot "$root" /venv/bin/pip install --quiet --no-index --find-links /tmp/wheels \
    "pgadmin4==$PGADMIN_VERSION" "gunicorn==$GUNICORN_VERSION" ||
    die "installing pgadmin4 in the image's rootfs failed (above)."
  rm -rf "$root/tmp/wheels"
  install -m 0755 "$(dirname "${BASH_SOURCE[0]}")/images/pgadmin-entrypoint.sh" \
    "$root/usr/local/bin/pgadmin-entrypoint"
  chroot "$root" useradd --uid 5050 --gid 0 --no-create-home --home-dir /var/lib/pgadmin \
    --shell /usr/sbin/nologin pgadmin
  install -d -o 5050 -g 0 -m 0750 "$root/var/lib/pgadmin"
  install -d -o 5050 -g 0 -m 0755 "$root/pgadmin4" "$root/run/pgadmin"
  log "pgAdmin installed in $(since "$t0") s"
}

# reject_image CONTRACT OUTPUT — a built image failed its contract check: shows why, removes it
# and its cached rootfs (the next run rebuilds from scratch), and stops.
reject_image() {
  printf '%s\n' "$2" >&2
  docker rmi "$image" >/dev/null 2>&1 || true
  rm -f "$tarball"
  die "$image does not meet the $1 contract (output above); removed it and its cached rootfs, re-run to rebuild from scratch."
}

if [ ! -s "$tarball" ]; then
  log "building local image $image with $what from Debian packages (no registry)"
  [ "$(uname -s)" = Linux ] || die "building $image needs Linux with debootstrap; build it on a Linux machine and 'docker load' it."
  need_root "building $image (debootstrap)"
  apt_install debootstrap debian-archive-keyring gpgv
  remove_root
  trap 'remove_root; rm -f "$tarball.tmp"' EXIT
  rm -f "$images_dir/$repo-$major".*.tar   # tarballs of older recipes

  deboot_log="$images_dir/debootstrap-$major.log"
  log "debootstrap $suite with $packages (about 1-2 min; log: $deboot_log)"
  t0="$(now)"
  if ! debootstrap --variant=minbase --include="$packages" \
      "$suite" "$root" "$DEBIAN_MIRROR" >"$deboot_log" 2>&1; then
    tail -n 20 "$deboot_log" >&2 || true
    die "debootstrap of $suite failed (log above, full log: $deboot_log); check that $DEBIAN_MIRROR is reachable (or set PG_CLUSTER_DEBIAN_MIRROR) and re-run."
  fi
  unmount_under "$root"
  log "debootstrap done in $(since "$t0") s"

  if [ "$major" = pgadmin ]; then
    install_pgadmin "$root"
  elif [ "$major" != router ]; then
    log "removing Debian's default cluster, creating /var/run/postgresql"
    rm -rf "$root/etc/postgresql/$major/main" "$root/var/lib/postgresql/$major/main"
    chroot "$root" install -d -o postgres -g postgres -m 2775 /run/postgresql
    [ -L "$root/var/run" ] || [ -d "$root/var/run/postgresql" ] \
      || chroot "$root" install -d -o postgres -g postgres -m 2775 /var/run/postgresql
  fi
  log "trimming docs, translations and apt caches"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
    "$root"/var/log/*.log "$root/etc/resolv.conf" "$root/etc/hostname"
  : >"$root/etc/resolv.conf"   # docker mounts its own; do not ship the build host's

  log "packing the rootfs into $tarball"
  t0="$(now)"
  tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  remove_root
  trap - EXIT
  log "rootfs cached ($(du -h "$tarball" | cut -f1)) in $(since "$t0") s"
else
  log "building local image $image with $what from Debian packages (no registry): importing cached rootfs $tarball"
fi

if [ "$major" = pgadmin ]; then
  t0="$(now)"
  docker import \
    --change 'ENV LANG=C.UTF-8 PATH=/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "LABEL pg-cluster.recipe=$RECIPE pg-cluster.debian-suite=$suite pg-cluster.pgadmin=$PGADMIN_VERSION" \
    --change 'USER 5050' \
    --change 'WORKDIR /var/lib/pgadmin' \
    --change 'ENTRYPOINT ["/usr/local/bin/pgadmin-entrypoint"]' \
    --message "pg-cluster: Debian $suite + pgAdmin $PGADMIN_VERSION from PyPI" \
    "$tarball" "$image" >/dev/null
  log "docker import done in $(since "$t0") s"
  # The contract: a login and a registered server from the environment, pgAdmin's own setup.
  # shellcheck disable=SC2016  # expanded inside the container
  check='set -eu
printf "%s" "check-Pw-12345" >/tmp/pw
printf "{\"Servers\":{\"1\":{\"Name\":\"n\",\"Group\":\"g\",\"Host\":\"h\",\"Port\":5432,\"MaintenanceDB\":\"postgres\",\"Username\":\"u\"}}}" >/tmp/s.json
export PGADMIN_DEFAULT_EMAIL=check@example.com PGADMIN_DEFAULT_PASSWORD_FILE=/tmp/pw PGADMIN_SERVER_JSON_FILE=/tmp/s.json
timeout 60 /usr/local/bin/pgadmin-entrypoint >/tmp/out 2>&1 &
for _ in $(seq 600); do grep -q "Listening at" /tmp/out && exit 0; sleep 0.1; done
cat /tmp/out >&2; exit 1'
  out="$(docker run --rm -e PGADMIN_LISTEN_PORT=5050 --entrypoint bash "$image" -c "$check" 2>&1)" || reject_image "pgAdmin image" "$out"
  log "$image verified (login and servers set up from the environment, gunicorn listening)"
  done_ok
fi

if [ "$major" = router ]; then
  # The official haproxy image's config path, so either image runs the component's upload.
  t0="$(now)"
  docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL pg-cluster.recipe=$RECIPE pg-cluster.debian-suite=$suite" \
    --change 'CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]' \
    --message "pg-cluster: Debian $suite + haproxy via debootstrap" \
    "$tarball" "$image" >/dev/null
  log "docker import done in $(since "$t0") s"
  # shellcheck disable=SC2016  # expanded inside the container
  check='set -eu
command -v bash >/dev/null
haproxy -v | grep -q "version 2\.6\." || { haproxy -v >&2; echo "not HAProxy 2.6" >&2; exit 1; }
printf "defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 1s\n  timeout server 1s\nlisten l\n  bind 127.0.0.1:5432\n  server s 127.0.0.1:5433\n" >/tmp/c.cfg
haproxy -c -q -f /tmp/c.cfg'
  out="$(docker run --rm "$image" bash -c "$check" 2>&1)" || reject_image "router image" "$out"
  log "$image verified (HAProxy 2.6, bash, haproxy -c) "
  done_ok
fi

t0="$(now)"
docker import \
  --change "ENV PATH=/usr/lib/postgresql/$major/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --change 'ENV LANG=C.UTF-8' \
  --change "LABEL pg-cluster.recipe=$RECIPE pg-cluster.postgres-major=$major pg-cluster.debian-suite=$suite" \
  --change 'CMD ["bash"]' \
  --message "pg-cluster: Debian $suite + postgresql-$major via debootstrap" \
  "$tarball" "$image" >/dev/null
log "docker import done in $(since "$t0") s"

# Verify the contract our container scripts rely on.
t0="$(now)"
docker run --rm "$image" true \
  || die "docker cannot run $image; check the engine (docker info, $PG_CLUSTER_CACHE/dockerd.log) and re-run."
# shellcheck disable=SC2016  # expanded inside the container
check='set -eu
for c in initdb postgres pg_ctl pg_basebackup pg_isready psql setpriv bash pgbackrest; do
  command -v "$c" >/dev/null || { echo "missing $c on PATH" >&2; exit 1; }
done
id postgres >/dev/null && getent group postgres >/dev/null
test -d /var/run/postgresql
setpriv --reuid=postgres --regid=postgres --init-groups bash -c "
  set -eu
  test -w /var/run/postgresql
  d=\$(mktemp -d)
  initdb -N -D \$d/data --locale=C.UTF-8 -E UTF8 -U postgres >/dev/null
  pg_ctl -D \$d/data -w -s -o \"-c listen_addresses=\" -l \$d/log start
  pg_isready -q -h /var/run/postgresql
  psql -h /var/run/postgresql -U postgres -Atc \"select 1\" >/dev/null
  pg_ctl -D \$d/data -w -s -m fast stop
  rm -rf \$d
"'
out="$(docker run --rm "$image" bash -c "$check" 2>&1)" || reject_image "image" "$out"
log "$image verified (PostgreSQL tools on PATH, postgres user, setpriv, initdb C.UTF-8, server start) in $(since "$t0") s"
done_ok
