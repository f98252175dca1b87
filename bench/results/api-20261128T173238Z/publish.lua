wrk.method = "POST"
wrk.body = '{"room":"bench","content":"hello from the api bench"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-api-key-0123456789abcdef"
