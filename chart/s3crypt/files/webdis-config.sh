# Writes the bundled webdis's configuration from the environment. Only clients presenting
# S3CRYPT_REDIS_AUTH ("user:password", HTTP basic auth) may run commands, and never the
# administrative ones; Redis itself listens on the pod's loopback only.
set -eu
: "${S3CRYPT_REDIS_AUTH:?S3CRYPT_REDIS_AUTH must be set}"
case "$S3CRYPT_REDIS_AUTH" in
  ?*:?*) ;;
  *) echo "S3CRYPT_REDIS_AUTH must be user:password" >&2; exit 1 ;;
esac
auth=$(printf '%s' "$S3CRYPT_REDIS_AUTH" | sed 's/\\/\\\\/g; s/"/\\"/g')
admin='"DEBUG", "FLUSHALL", "FLUSHDB", "CONFIG", "SHUTDOWN", "MONITOR", "SLAVEOF", "REPLICAOF", "MODULE", "ACL", "SAVE", "BGSAVE", "BGREWRITEAOF", "CLIENT", "CLUSTER", "MIGRATE", "SYNC", "PSYNC"'
umask 077
cat > "$WEBDIS_CONFIG" <<JSON
{
  "redis_host": "$REDIS_HOST", "redis_port": $REDIS_PORT,
  "http_host": "$WEBDIS_HOST", "http_port": $WEBDIS_PORT,
  "threads": $WEBDIS_THREADS, "pool_size": $WEBDIS_POOL_SIZE,
  "daemonize": false, "websockets": false, "database": 0,
  "acl": [
    {"disabled": ["*"]},
    {"http_basic_auth": "$auth", "enabled": ["*"]},
    {"http_basic_auth": "$auth", "disabled": [$admin]}
  ],
  "verbosity": 3, "logfile": "$WEBDIS_LOGFILE"
}
JSON
