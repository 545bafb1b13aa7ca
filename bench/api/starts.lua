-- wrk script: authenticated starts over keep-alive connections, each with a new execution id.
-- Arguments (after --): tenant=key pairs; requests go round-robin over them. "wait" among them
-- adds ?wait_ms=5000: each answer then comes once the engine decided (ExecutionStarted and
-- the first step's command committed), so the latency is start -> first command.
--   wrk -t2 -c64 -d20s --latency -s starts.lua http://127.0.0.1:PORT -- acme=ak_... [wait]
local counter = 0
local threads = {}
local tenants = {}

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

local query = ""
local expected = 202

function init(args)
  for _, pair in ipairs(args) do
    if pair == "wait" then
      query = "?wait_ms=5000"
      expected = 201
    else
      local tenant, key = pair:match("([^=]+)=(.+)")
      table.insert(tenants, { tenant = tenant, key = key })
    end
  end
  -- thread_id is the global setup() gave this thread: ids stay unique across threads.
  thread_id = thread_id or 0
end

function request()
  counter = counter + 1
  local t = tenants[(counter % #tenants) + 1]
  local body = string.format('{"execution_id":"w%d-%d","workflow":"quick","input":{"n":%d}}',
                             thread_id, counter, counter)
  return wrk.format("POST", "/v1/tenants/" .. t.tenant .. "/executions" .. query,
                    { ["Authorization"] = "Bearer " .. t.key,
                      ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  if status ~= expected then
    io.stderr:write("unexpected status " .. status .. ": " .. body .. "\n")
  end
end

function done(summary, latency, requests)
  io.write(string.format("starts/s %.0f  p50 %.2f ms  p99 %.2f ms  errors %d non-2xx/socket\n",
                         summary.requests / (summary.duration / 1e6),
                         latency:percentile(50) / 1000, latency:percentile(99) / 1000,
                         summary.errors.status + summary.errors.connect + summary.errors.read +
                         summary.errors.write + summary.errors.timeout))
end
