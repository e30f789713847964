-- perf/zipf.lua — wrk script for the "cache" scenario's zipf workload.
--
--   wrk -s perf/zipf.lua URL -- [n] [s] [seed] [prefix]
--
-- Each request is GET PREFIX..id with id drawn from 1..n with Zipf(s)
-- probability (P(id) ~ 1/id^s), looked up in a cumulative table built once
-- in init(). The draws come from a deterministic Park-Miller generator
-- seeded with seed + 7919 * thread index, so every server sees the same
-- request sequence. (run.sh fills the caches beforehand by walking all n
-- URLs once with curl.) URL only gives wrk the host and port.
--
--   n       number of distinct URLs                         [10000]
--   s       Zipf exponent                                   [1.0]
--   seed    generator seed                                  [42]
--   prefix  path prefix; the id is appended                 [/perf/items/]
--
-- All requests and SEQ_LEN draws are prepared in init(); request() only
-- indexes tables, so the script costs wrk little CPU (wrk shares its core
-- with the origin). With n = 10000 and s = 1.0, id 1 is ~10 % of requests
-- and the top 100 ids ~53 %.

local SEQ_LEN = 262144 -- precomputed draws per thread, replayed in a loop

local reqs, seq, pos = {}, {}, 0

function setup(thread)
    -- Runs in the setup environment, once per thread, before init().
    thread_count = (thread_count or 0) + 1
    thread:set("thread_index", thread_count - 1)
end

function init(args)
    local n = tonumber(args[1] or "10000")
    local s = tonumber(args[2] or "1.0")
    local seed = tonumber(args[3] or "42")
    local prefix = args[4] or "/perf/items/"
    assert(n and n >= 1 and s and seed, "zipf.lua: bad arguments (n s seed prefix)")

    for i = 1, n do
        reqs[i] = wrk.format("GET", prefix .. i)
    end

    -- Cumulative Zipf table: cdf[i] = sum_{k<=i} k^-s / sum_{k<=n} k^-s.
    local cdf, total = {}, 0
    for i = 1, n do
        total = total + i ^ -s
        cdf[i] = total
    end
    for i = 1, n do
        cdf[i] = cdf[i] / total
    end
    cdf[n] = 1.0

    -- Park-Miller minimal standard generator (exact in doubles: 16807 * x < 2^46).
    local m = 2147483647
    local x = (seed + 7919 * (thread_index or 0)) % m
    if x <= 0 then x = x + m - 1 end
    for j = 1, SEQ_LEN do
        x = (16807 * x) % m
        local u = x / m -- in (0, 1)
        local lo, hi = 1, n
        while lo < hi do -- first i with cdf[i] >= u
            local mid = math.floor((lo + hi) / 2)
            if cdf[mid] >= u then hi = mid else lo = mid + 1 end
        end
        seq[j] = lo
    end
end

function request()
    pos = pos + 1
    if pos > SEQ_LEN then pos = 1 end
    return reqs[seq[pos]]
end
