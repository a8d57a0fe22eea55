#!/usr/bin/env node
/**
 * Issue 7, goal 5: resident memory of sessionlb after it has seen many distinct sessions.
 *
 *   npm run build && node bench/sessions-rss.mjs                 # 1,000,000 sessions, memory store and memcached
 *   RSS_SESSIONS=200000 RSS_STORES=memory node bench/sessions-rss.mjs
 *
 * For each store, a fresh `sessionlb run` (upstream with `sticky: {mode: "learn"}`, four
 * loopback backends) gets RSS_SESSIONS requests, each with a new valid PHPSESSID cookie
 * (`wrk -t1 -c64` with a Lua script numbering the ids; wrk runs in bounded chunks of
 * RSS_CHUNK seconds, each continuing where the last one stopped). An unknown id is bound
 * to the server that answered, so every request adds one binding: to the memory store
 * (bounded at 1,000,000 entries) or, with memcached, to memcached plus the local LRU
 * (bounded by `localCacheEntries`, default 100,000). After every chunk the proxy's VmRSS
 * and VmHWM (/proc/<pid>/status) are printed; at the end a markdown table.
 *
 * Knobs: RSS_SESSIONS (1000000), RSS_STORES (memory,memcached), RSS_CHUNK (seconds, 10),
 * RSS_CONNECTIONS (64), RSS_MAX_SECONDS (per store, 600: a hard bound), BENCH_PIN=0,
 * RSS_NODE_ARGS (node flags for the proxy, e.g. "--max-old-space-size=128": how much of the
 * RSS is live data rather than heap the GC has not given back yet).
 * Everything listens on 127.0.0.1; every child is killed by its PID.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import {
  PIN, ROOT, freePort, killAllNow as killAll, pinnedArgv, sessionlbCheck, sleep, startChild, startMemcached, stopChild, waitReady, which, whichOr,
} from './lib.mjs';

const env = process.env;
const int = (v, d) => (v === undefined || v === '' ? d : Math.max(1, Math.trunc(Number(v))));
const SESSIONS = int(env.RSS_SESSIONS, 1_000_000);
const STORES = (env.RSS_STORES ?? 'memory,memcached').split(',').map((s) => s.trim()).filter(Boolean);
const CHUNK = int(env.RSS_CHUNK, 10);
const CONNECTIONS = int(env.RSS_CONNECTIONS, 64);
const MAX_SECONDS = int(env.RSS_MAX_SECONDS, 600);

const WRK = which('wrk');
const NGINX = whichOr('nginx', '/usr/sbin/nginx');
const MEMCACHED = which('memcached');
const log = (line) => process.stderr.write(`${line}\n`);
if (WRK === null) {
  log('sessions-rss: `wrk` is needed');
  process.exit(2);
}
if (!existsSync(join(ROOT, 'dist', 'cli.js'))) {
  log('sessions-rss: run `npm run build` first');
  process.exit(2);
}
const { YOUNG_GENERATION_FLAG } = await import('../dist/process/heap-tuning.js');
const NODE_ARGS = (env.RSS_NODE_ARGS ?? YOUNG_GENERATION_FLAG).split(' ').filter(Boolean); // as npm start runs it

const TMP = mkdtempSync(join(os.tmpdir(), 'sessionlb-rss-'));
const cleanup = () => rmSync(TMP, { recursive: true, force: true });
process.on('SIGINT', () => { killAll(); cleanup(); process.exit(130); });
process.on('SIGTERM', () => { killAll(); cleanup(); process.exit(143); });

function memory(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name) => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
}

async function startBackends(ports) {
  if (NGINX !== null) {
    const t = join(TMP, 'nginx');
    mkdirSync(t, { recursive: true });
    let conf = `worker_processes 1;\npid ${t}/nginx.pid;\nerror_log ${t}/error.log warn;\nevents { worker_connections 4096; }\nhttp {\n  access_log off;\n  client_body_temp_path ${t}/cb;\n  proxy_temp_path ${t}/p;\n  fastcgi_temp_path ${t}/f;\n  uwsgi_temp_path ${t}/u;\n  scgi_temp_path ${t}/s;\n  keepalive_requests 1000000;\n  default_type text/plain;\n`;
    ports.forEach((p, i) => { conf += `  server { listen 127.0.0.1:${p}; location / { return 200 "backend-${i + 1}\\n"; } }\n`; });
    writeFileSync(join(TMP, 'backends.conf'), `${conf}}\n`);
    return startChild(NGINX, ['-p', TMP, '-e', join(t, 'stderr.log'), '-c', join(TMP, 'backends.conf'), '-g', 'daemon off;'], { cpu: '1', logFile: join(TMP, 'backends.log') });
  }
  const script = `const http = require('node:http');
for (const [i, p] of ${JSON.stringify(ports)}.entries()) {
  const body = Buffer.from('backend-' + (i + 1) + '\\n');
  http.createServer({ keepAliveTimeout: 75000 }, (req, res) => { req.resume(); res.writeHead(200, { 'Content-Length': body.length }); res.end(body); }).listen(p, '127.0.0.1');
}`;
  writeFileSync(join(TMP, 'backends.cjs'), script);
  return startChild(process.execPath, [join(TMP, 'backends.cjs')], { cpu: '1', logFile: join(TMP, 'backends.log') });
}

function startRssMemcached() {
  // Enough memory for a million small bindings (memcached is not what is measured).
  return startMemcached(MEMCACHED, { memoryMiB: 512, cpu: '1', logFile: join(TMP, 'memcached.log') });
}

/** wrk Lua: request i carries PHPSESSID=rss<26 digits of START+i> (a valid PHP id: 29 chars of [a-z0-9]). */
const LUA = join(TMP, 'sessions.lua');
writeFileSync(LUA, `local n = 0
init = function(args)
  n = tonumber(args[1]) or 0
end
request = function()
  n = n + 1
  return wrk.format("GET", "/", { ["Cookie"] = string.format("PHPSESSID=rss%026d", n) })
end
`);

function runWrk(port, start, seconds) {
  const args = ['-t1', `-c${CONNECTIONS}`, `-d${seconds}s`, '--timeout', '5s', '-s', LUA, `http://127.0.0.1:${port}/`, '--', String(start)];
  const argv = pinnedArgv(WRK, args, '1');
  const r = spawnSync(argv[0], argv[1], { encoding: 'utf8', timeout: (seconds + 30) * 1000 });
  const requests = Number(/(\d+) requests in/.exec(r.stdout)?.[1] ?? 0);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(r.stdout)?.[1] ?? 0);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(r.stdout)?.[1] ?? 0);
  return { requests, non2xx, rps, out: r.stdout + r.stderr };
}

async function measure(store, backendPorts) {
  const memcached = store === 'memcached' ? await startRssMemcached() : null;
  const port = await freePort();
  const config = {
    servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
    upstreams: { backend: { servers: backendPorts.map((p) => ({ address: `127.0.0.1:${p}` })), keepalive: CONNECTIONS, sticky: { mode: 'learn', cookie: 'PHPSESSID', ttl: '24m' } } },
    shutdownTimeout: '2s',
    accessLog: false,
    workers: 1,
  };
  if (memcached) config.sessionStore = { type: 'memcached', servers: [`127.0.0.1:${memcached.port}`], keyPrefix: 'rss:', timeout: '100ms' };
  const file = join(TMP, `sessionlb-${store}.json`);
  // Keys that an older tree does not know yet are dropped (the measurement stays the same).
  for (const optional of ['workers', 'accessLog']) {
    writeFileSync(file, JSON.stringify(config, null, 2));
    const c = sessionlbCheck(file);
    if (c.ok) break;
    if (!c.output.includes(optional)) throw new Error(`sessionlb check rejects the config:\n${c.output}`);
    delete config[optional];
  }
  writeFileSync(file, JSON.stringify(config, null, 2));
  const lb = startChild(process.execPath, [...NODE_ARGS, join(ROOT, 'dist', 'cli.js'), 'run', '--config', file], { cpu: '0', logFile: join(TMP, `sessionlb-${store}.log`) });
  const rows = [];
  try {
    await waitReady(port, { child: lb });
    const idle = memory(lb.pid);
    rows.push({ sessions: 0, ...idle, rps: NaN });
    log(`${store}: idle RSS ${idle.rss.toFixed(0)} MiB`);
    let seen = 0;
    let errors = 0;
    const deadline = Date.now() + MAX_SECONDS * 1000;
    while (seen < SESSIONS && Date.now() < deadline) {
      await sleep(10); // lets SIGINT/SIGTERM handlers run between the (synchronous) wrk chunks
      const r = runWrk(port, seen, CHUNK);
      if (r.requests === 0) throw new Error(`wrk served nothing: ${r.out.trim()}`);
      seen += r.requests;
      errors += r.non2xx;
      const m = memory(lb.pid);
      rows.push({ sessions: seen, ...m, rps: r.rps });
      log(`${store}: ${seen.toLocaleString('en')} sessions seen, ${Math.round(r.rps).toLocaleString('en')} req/s, VmRSS ${m.rss.toFixed(0)} MiB, VmHWM ${m.hwm.toFixed(0)} MiB${r.non2xx ? `, ${r.non2xx} non-2xx` : ''}`);
    }
    // Idle a few seconds (timers, GC) and read once more: what the process keeps.
    await sleep(3000);
    const after = memory(lb.pid);
    return { store, rows, after, errors, seen };
  } finally {
    await stopChild(lb);
    if (memcached) await stopChild(memcached.child);
  }
}

async function main() {
  const backendPorts = [await freePort(), await freePort(), await freePort(), await freePort()];
  const backends = await startBackends(backendPorts);
  for (const p of backendPorts) await waitReady(p, { child: backends });
  log(`sessions-rss: ${SESSIONS.toLocaleString('en')} distinct sessions per store (${STORES.join(', ')}), wrk -t1 -c${CONNECTIONS} in ${CHUNK} s chunks; ${PIN ? 'proxy on CPU 0, wrk + backends + memcached on CPU 1' : 'not pinned'}; load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  const results = [];
  try {
    for (const store of STORES) {
      if (store === 'memcached' && MEMCACHED === null) { log('memcached not installed: skipped'); continue; }
      results.push(await measure(store, backendPorts));
    }
  } finally {
    await stopChild(backends, NGINX !== null ? 'SIGQUIT' : 'SIGTERM');
  }
  const lines = ['| store | sessions seen | idle RSS | VmRSS at end | VmHWM (peak) | RSS 3 s later | non-2xx |', '|---|---:|---:|---:|---:|---:|---:|'];
  for (const r of results) {
    const last = r.rows[r.rows.length - 1];
    lines.push(`| ${r.store === 'memcached' ? 'memcached (local LRU 100k)' : 'memory (1M bound)'} | ${r.seen.toLocaleString('en')} | ${r.rows[0].rss.toFixed(0)} MiB | ${last.rss.toFixed(0)} MiB | ${last.hwm.toFixed(0)} MiB | ${r.after.rss.toFixed(0)} MiB | ${r.errors} |`);
  }
  process.stdout.write(`\n${lines.join('\n')}\n\nnode ${process.version}${NODE_ARGS.length ? ` ${NODE_ARGS.join(' ')}` : ''}; goal 5 of issue 7: <= 200 MiB with 1M sessions seen.\n`);
}

main().then(cleanup, (err) => {
  log(`sessions-rss: ${err.stack ?? err}`);
  killAll();
  cleanup();
  process.exit(1);
});
