-- perf/soak.lua: wrk script for perf/soak.sh. Mixed traffic, in turn: the
-- mock route, the proxied route, and a cached route over 100 keys (cache
-- hits once each key has been fetched).
local n = 0
request = function()
    n = n + 1
    local k = n % 4
    local path
    if k == 0 then
        path = "/prod/hello"
    elseif k == 1 then
        path = "/prod/proxied"
    else
        path = "/prod/cached/" .. (100 + (n % 100))
    end
    return wrk.format("GET", path)
end
