# Shared by the bench scripts (sourced, not run).

# Writes DIR/one.lua: wrk's single-item encrypt request (a 32-byte field,
# token `bench`), and sets FIELD to that field's base64.
one_lua() {
  FIELD=$(head -c 32 /dev/zero | tr '\0' 'B' | base64)
  cat > "$1/one.lua" <<LUA
wrk.method = "POST"
wrk.headers["X-Vault-Token"] = "bench"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"plaintext":"$FIELD"}'
LUA
}
