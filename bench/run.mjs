#!/usr/bin/env node
/**
 * sessionlb benchmark (issue 7): sessionlb vs nginx (and HAProxy when installed) on loopback.
 *
 *   npm run bench                               # 3 interleaved runs x 10 s per scenario and proxy
 *   BENCH_QUICK=1 npm run bench                 # 1 run x 3 s, for development
 *   BENCH_RUNS=5 BENCH_DURATION=20 npm run bench
 *   BENCH_ONLY=plain,close BENCH_PROXIES=sessionlb,nginx npm run bench
 *   BENCH_ONLY=https,https-close,http2 npm run bench   # TLS (issue 16): goals 7, 8, 9
 *
 * Everything listens on 127.0.0.1 and every child is killed by its PID at the end.
 * See bench/README.md for how to read the table.
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { basename, join, resolve } from 'node:path';
import {
  PIN, ROOT, TASKSET, children, freePort, killAllNow, pinnedArgv, sessionlbCheck, startChild, startMemcached, stopChild, waitReady, which, whichOr,
} from './lib.mjs';

const env = process.env;
const int = (v, d) => (v === undefined || v === '' ? d : Math.max(0, Math.trunc(Number(v))));
const QUICK = env.BENCH_QUICK === '1';
const RUNS = Math.max(1, int(env.BENCH_RUNS, QUICK ? 1 : 3));
const DURATION = Math.max(1, int(env.BENCH_DURATION, QUICK ? 3 : 10));
const WARMUP = int(env.BENCH_WARMUP, QUICK ? 1 : 2);
const CONNECTIONS = Math.max(1, int(env.BENCH_CONNECTIONS, 64));
const SESSIONS = Math.max(1, int(env.BENCH_SESSIONS, 10_000));
/** Client source addresses of the `stream-source` scenarios (bench/l4-clients.mjs: 127.20.x.y). */
const SOURCE_ADDRESSES = Math.max(1, Math.min(254 * 256, int(env.BENCH_SOURCE_ADDRESSES, 10_000)));
const ONLY = env.BENCH_ONLY ? new Set(env.BENCH_ONLY.split(',').map((s) => s.trim())) : null;
const PROXY_FILTER = env.BENCH_PROXIES ? new Set(env.BENCH_PROXIES.split(',').map((s) => s.trim())) : null;
/**
 * Comma-separated checkouts of sessionlb whose builds run in the same benchmark as this one
 * (before/after a change: `git worktree add /tmp/before <rev>`, build there, BENCH_BUILDS=/tmp/before).
 * Each is named "sessionlb (<directory name>)".
 */
const BUILDS = env.BENCH_BUILDS ? env.BENCH_BUILDS.split(',').map((s) => s.trim()).filter(Boolean) : [];
/** Directory for `node --cpu-prof` profiles of sessionlb (one per measured run); unset = no profiling. */
const CPU_PROF_DIR = env.BENCH_CPU_PROF ? resolve(env.BENCH_CPU_PROF) : null;
const WEIGHTS = [3, 1, 1, 1];
/** The backends' PROXY-protocol ports (same order as the plain ones), filled in by main(). */
const PP_BACKEND_PORTS = [];
const BIG = 1024 * 1024;

function findNginx() {
  if (env.BENCH_NGINX === '0') return null;
  return whichOr('nginx', '/usr/sbin/nginx');
}
const NGINX = findNginx();
/**
 * nginx's stream module: built in, or a dynamic module to load (Debian: libnginx-mod-stream);
 * { load: null } when built in, null when missing (scenario 6 then has no nginx line).
 */
function findNginxStream() {
  if (NGINX === null) return null;
  const v = spawnSync(NGINX, ['-V'], { encoding: 'utf8' });
  const flags = `${v.stdout}${v.stderr}`;
  if (/--with-stream(?!\S)/.test(flags) && !/--with-stream=dynamic/.test(flags)) return { load: null };
  for (const dir of ['/usr/lib/nginx/modules', '/usr/share/nginx/modules', '/usr/lib64/nginx/modules', '/etc/nginx/modules']) {
    const file = join(dir, 'ngx_stream_module.so');
    if (existsSync(file)) return { load: file };
  }
  return null;
}
const NGINX_STREAM = findNginxStream();
const HAPROXY = env.BENCH_HAPROXY === '0' ? null : whichOr('haproxy', '/usr/sbin/haproxy');
const WRK = which('wrk');
/** TLS scenarios (issue 16): the certificate is made with the openssl CLI; s_time measures handshakes/s, h2load HTTP/2. */
const OPENSSL = which('openssl');
const H2LOAD = which('h2load');
/** Parallel `openssl s_time` clients in the handshake scenarios (s_time makes one connection at a time). */
const STIME_CLIENTS = Math.max(1, int(env.BENCH_STIME_CLIENTS, 8));
const MEMCACHED = whichOr('memcached', '/usr/bin/memcached');
const CPUS = os.cpus().length;
const PROXY_CPU = '0';
const LOAD_CPU = '1';

function log(line) {
  process.stderr.write(`${line}\n`);
}

if (WRK === null) {
  log('bench: `wrk` is needed (Debian/Ubuntu: apt-get install wrk). autocannon is not used by this harness.');
  process.exit(2);
}
if (!existsSync(join(ROOT, 'dist', 'cli.js'))) {
  log('bench: dist/cli.js is missing; run `npm run build` first (npm run bench does).');
  process.exit(2);
}
/** sessionlb runs as `npm start` and the Dockerfile run it (src/process/heap-tuning.ts). */
const { YOUNG_GENERATION_FLAG } = await import('../dist/process/heap-tuning.js');

// ---------------------------------------------------------------------------------------------
// Children: every process we start is recorded and killed by its PID, never by name.
process.on('SIGINT', () => { killAllNow(); cleanup(); process.exit(130); });
process.on('SIGTERM', () => { killAllNow(); cleanup(); process.exit(143); });

/** Ready when `GET path` answers 200; the warm-up request carries a session cookie (the sticky scenario's proxies learn it). */
const ready = (port, path, child, tls = false) => waitReady(port, { path, child, tls, headers: { Cookie: 'PHPSESSID=benchwarmupsession0000000001' } });

/** Peak resident set (VmHWM) of a process and its children (nginx master + worker), in MiB. */
function peakRssMiB(pid) {
  let kb = 0;
  const visit = (p) => {
    try {
      const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, 'utf8'));
      if (m) kb += Number(m[1]);
      const kids = readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim();
      if (kids) for (const k of kids.split(/\s+/)) visit(Number(k));
    } catch { /* process gone or no /proc */ }
  };
  visit(pid);
  return kb / 1024;
}

/** CPU time (user + system) of a process and its children so far, in microseconds (from /proc/<pid>/stat). */
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
function cpuMicros(pid) {
  let ticks = 0;
  const visit = (p) => {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]); // utime, stime
      const kids = readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim();
      if (kids) for (const k of kids.split(/\s+/)) visit(Number(k));
    } catch { /* gone */ }
  };
  visit(pid);
  return (ticks / CLK_TCK) * 1e6;
}

// ---------------------------------------------------------------------------------------------
// Setup: temp dir, loopback backends (nginx `return 200` or node:http), memcached.
const TMP = mkdtempSync(join(os.tmpdir(), 'sessionlb-bench-'));
chmodSync(TMP, 0o755); // nginx workers run as an unprivileged user and must read the 1 MiB file
mkdirSync(join(TMP, 'www'), { mode: 0o755 });
writeFileSync(join(TMP, 'www', 'big'), Buffer.alloc(BIG, 'x'), { mode: 0o644 });
// Issue 17's gzip goal: a 20 KiB HTML page (repetitive markup, as a PHP page's: about 6:1 with gzip -1).
const HTML = Array.from({ length: 200 }, (_, i) => `<tr><td class="c">row ${i}</td><td><a href="/item/${i}">item ${i}</a></td></tr>\n`).join('');
const HTML_PAGE = `<!doctype html><html><head><title>bench</title></head><body><table>\n${HTML}</table></body></html>\n`.padEnd(20 * 1024, ' ');
writeFileSync(join(TMP, 'www', 'html'), HTML_PAGE, { mode: 0o644 });
function cleanup() {
  if (env.BENCH_KEEP_TMP !== '1') rmSync(TMP, { recursive: true, force: true });
}

/**
 * The TLS scenarios' certificate: EC P-256, self-signed for "localhost", made once per run in TMP
 * (removed with it; never committed). The same files for every proxy; HAProxy wants certificate and
 * key in one PEM (`pem`). null (with `reason`) without the openssl CLI.
 */
let certs;
function tlsCerts() {
  if (certs !== undefined) return certs;
  if (OPENSSL === null) return (certs = { reason: 'the openssl CLI is not installed' });
  const dir = join(TMP, 'tls');
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const cert = join(dir, 'localhost.crt');
  const key = join(dir, 'localhost.key');
  // 30 days: `sessionlb check` warns about certificates that expire within 14.
  const r = spawnSync(OPENSSL, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '30',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', key, '-out', cert], { encoding: 'utf8' });
  if (r.status !== 0) return (certs = { reason: `openssl req failed: ${`${r.stderr}`.trim().split('\n').pop()}` });
  chmodSync(key, 0o644); // nginx workers (an unprivileged user) do not read it, the master does; HAProxy and sessionlb run as us
  const pem = join(dir, 'localhost.pem');
  writeFileSync(pem, readFileSync(cert, 'utf8') + readFileSync(key, 'utf8'), { mode: 0o600 });
  return (certs = { cert, key, pem, reason: null });
}

function nginxCommon(name, workers = 1) {
  const t = join(TMP, name);
  mkdirSync(t, { recursive: true, mode: 0o755 });
  return `worker_processes ${workers};
pid ${t}/nginx.pid;
error_log ${t}/error.log warn;
events { worker_connections 8192; multi_accept on; }
http {
  access_log off;
  client_body_temp_path ${t}/client_body;
  proxy_temp_path ${t}/proxy;
  fastcgi_temp_path ${t}/fastcgi;
  uwsgi_temp_path ${t}/uwsgi;
  scgi_temp_path ${t}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
`;
}

/**
 * `ppPorts[i]`: a second port of backend i that expects a PROXY protocol header (v1 or v2; nginx
 * `listen ... proxy_protocol`, the address is then ignored), for the `stream-pp2` scenario. Only the
 * nginx backends have them (`pp: true`).
 */
async function startBackends(ports, ppPorts) {
  if (NGINX !== null && env.BENCH_NODE_BACKENDS !== '1') {
    let conf = nginxCommon('backends');
    conf += `  default_type text/plain;\n  sendfile on;\n  tcp_nopush on;\n`;
    ports.forEach((p, i) => {
      conf += `  server {\n    listen 127.0.0.1:${p} reuseport backlog=4096;\n    listen 127.0.0.1:${ppPorts[i]} proxy_protocol reuseport backlog=4096;\n    location / { return 200 "backend-${i + 1}\\n"; }\n    location = /big { root ${TMP}/www; }\n    location = /html { root ${TMP}/www; default_type text/html; }\n  }\n`;
    });
    conf += '}\n';
    const file = join(TMP, 'backends.conf');
    writeFileSync(file, conf);
    const child = startChild(NGINX, ['-p', TMP, '-e', join(TMP, 'backends', 'stderr.log'), '-c', file, '-g', 'daemon off;'], { cpu: LOAD_CPU, logFile: join(TMP, 'backends.log') });
    for (const p of ports) await ready(p, '/', child);
    return { kind: 'nginx (return 200, 1 worker)', child, pp: true };
  }
  // Fallback: one node:http process serving the four ports.
  const script = `
const http = require('node:http');
const big = Buffer.alloc(${BIG}, 'x');
const html = require('node:fs').readFileSync(${JSON.stringify(join(TMP, 'www', 'html'))});
for (const [i, p] of ${JSON.stringify(ports)}.entries()) {
  const body = Buffer.from('backend-' + (i + 1) + '\\n');
  http.createServer({ keepAliveTimeout: 75000 }, (req, res) => {
    req.resume();
    const b = req.url === '/big' ? big : req.url === '/html' ? html : body;
    res.writeHead(200, { 'Content-Type': req.url === '/html' ? 'text/html' : 'text/plain', 'Content-Length': b.length });
    res.end(b);
  }).listen(p, '127.0.0.1');
}`;
  const file = join(TMP, 'backends.cjs');
  writeFileSync(file, script);
  const child = startChild(process.execPath, [file], { cpu: LOAD_CPU, logFile: join(TMP, 'backends.log') });
  for (const p of ports) await ready(p, '/', child);
  return { kind: 'node:http (nginx not installed)', child, pp: false };
}

function startBenchMemcached() {
  if (MEMCACHED === null) return null;
  return startMemcached(MEMCACHED, { memoryMiB: 64, cpu: LOAD_CPU, logFile: join(TMP, 'memcached.log') });
}

// ---------------------------------------------------------------------------------------------
// Scenarios and policies.
/** `policy` is sessionlb's `balance` value; nginx/haproxy directives are the equivalents. */
const POLICIES = [
  { id: 'least_conn', balance: 'least_conn', nginx: 'least_conn;', haproxy: 'balance leastconn' },
  { id: 'ip_hash', balance: 'ip_hash', nginx: 'ip_hash;', haproxy: 'balance source' },
  { id: 'hash $request_uri', balance: { hash: '$request_uri' }, nginx: 'hash $request_uri;', haproxy: 'balance uri' },
  { id: 'hash $remote_addr consistent', balance: { hash: '$remote_addr', consistent: true }, nginx: 'hash $remote_addr consistent;', haproxy: 'balance source\n  hash-type consistent' },
  { id: 'random', balance: 'random', nginx: 'random;', haproxy: 'balance random' },
  { id: 'random two least_conn', balance: { random: 'two', pick: 'least_conn' }, nginx: 'random two least_conn;', haproxy: 'balance random(2)' },
];

/** Scenario "edge" (issue 17): 20 regex locations of the kinds PHP sites have, none matching the bench's "/". */
const EDGE_REGEXES = Array.from({ length: 20 }, (_, i) => (i % 2 === 0
  ? ['~', `^/app${i}/.*\\.php$`]
  : ['~*', `\\.(jpe?g|png|gif|css|js|woff${i})$`]));

/** Scenario "edge": the /api/ location's allow/deny list (nginx's order). */
const EDGE_ACCESS = [['allow', '10.0.0.0/8'], ['allow', '192.168.0.0/16'], ['deny', '192.168.1.1'], ['allow', '2001:db8::/32'], ['deny', 'all']];

const SCENARIOS = [
  { id: 'plain', title: '1 round robin, keep-alive', path: '/' },
  // Issue 17: scenario 1 with 20 regex locations ahead of "/" (each request is tested against all of them).
  { id: 'edge', title: '1 round robin, keep-alive, 20 regex locations, /api/ with allow/deny and limit_req', path: '/', edge: true },
  // Issue 17: a 20 KiB HTML page compressed by the proxy (gzip level 1 on both), the client asking for gzip.
  { id: 'gzip', title: '1 round robin, keep-alive, 20 KiB HTML gzipped (level 1)', path: '/html', gzip: true },
  { id: 'sticky', title: `2 sticky learn, memcached, ${SESSIONS.toLocaleString('en')} sessions`, path: '/', sticky: true },
  { id: 'close', title: '3 Connection: close', path: '/', close: true },
  { id: 'big', title: '4 1 MiB responses', path: '/big', big: true },
  ...POLICIES.map((p) => ({ id: `policy:${p.id}`, title: `1 balance ${p.id}`, path: '/', policy: p })),
  // Multi-core (issue 7): 2 workers each, not pinned, so they use both cores and share one with wrk and the backends.
  ...(CPUS >= 2 ? [
    { id: 'multi', title: '1 round robin, keep-alive, 2 workers unpinned (shares a core with wrk)', path: '/', multi: true },
    { id: 'multi-close', title: '3 Connection: close, 2 workers unpinned (shares a core with wrk)', path: '/', multi: true, close: true },
  ] : []),
  // Goal 6: L4 (TCP) proxying, sessionlb `streams` vs nginx `stream {}`; wrk's keep-alive connections each stay on one backend.
  { id: 'stream', title: '6 L4 stream (TCP), keep-alive HTTP through it', path: '/', stream: true },
  // Issue 18: the same with a PROXY v2 header on every upstream connection (sessionlb `sendProxy: "v2"`;
  // nginx `proxy_protocol on` sends v1 only), to backend ports that expect one (`listen ... proxy_protocol`).
  { id: 'stream-pp2', title: '6 L4 stream, PROXY v2 sent to the backends (nginx: v1)', path: '/', stream: true, pp2: true },
  // Issue 18: connections per second through the stream: wrk `Connection: close`, a new TCP connection per request.
  { id: 'stream-close', title: '6 L4 stream, Connection: close (a TCP connection per request)', path: '/', stream: true, close: true },
  // Issue 18: source affinity (`sticky: {mode: "source"}`, memcached store) against the same stream without it,
  // both loaded by bench/l4-clients.mjs from SOURCE_ADDRESSES loopback addresses, a connection per request.
  { id: 'stream-source', title: `6 L4 stream, sticky source, ${SOURCE_ADDRESSES.toLocaleString('en')} client addresses (l4-clients)`, path: '/', stream: true, source: true, l4: true },
  { id: 'stream-source-plain', group: 'stream-source', title: `6 L4 stream, no affinity, ${SOURCE_ADDRESSES.toLocaleString('en')} client addresses (l4-clients)`, path: '/', stream: true, l4: true },
  // Issue 16, TLS termination (goals 7-9): the same backends (plain HTTP), the client side over TLS with one
  // certificate (tlsCerts) for every proxy, TLSv1.2 + TLSv1.3 and the default ciphers.
  // Goal 7: keep-alive HTTPS, wrk over https://.
  { id: 'https', title: '7 HTTPS keep-alive', path: '/', tls: true },
  // Goal 8: a new TLS connection per request. wrk does a full handshake per connection and never resumes;
  // `openssl s_time` (STIME_CLIENTS in parallel, each one connection at a time, `-www /`: one HTTP/1.0
  // request per connection) gives handshakes/s with full handshakes (-new) and with resumption (-reuse).
  { id: 'https-close', title: '8 HTTPS Connection: close (full handshake per request, wrk)', path: '/', tls: true, close: true },
  { id: 'https-new', group: 'https-close', title: '8 TLS full handshakes (openssl s_time -new)', path: '/', tls: true, stime: 'new' },
  { id: 'https-resume', group: 'https-close', title: '8 TLS resumed handshakes (openssl s_time -reuse)', path: '/', tls: true, stime: 'reuse' },
  // Goal 9: HTTP/2, h2load 64 streams over 8 connections.
  { id: 'http2', title: '9 HTTP/2 (h2load -c8 -m8)', path: '/', tls: true, h2: true },
].filter((s) => ONLY === null || ONLY.has(s.id) || (s.group && ONLY.has(s.group)) || (s.policy && ONLY.has('policies'))
  || ((s.tls || s.h2) && ONLY.has('tls')));
/** Why sessionlb has no line in the HTTP/2 scenario (goal 9). */

function luaCookieScript() {
  const file = join(TMP, 'sessions.lua');
  // Pre-formats one request per session id at init, then rotates through them.
  writeFileSync(file, `local reqs = {}
local n = 0
local count = ${SESSIONS}
init = function(args)
  for i = 1, count do
    reqs[i] = wrk.format("GET", nil, { ["Cookie"] = string.format("PHPSESSID=bench%021d", i) })
  end
end
request = function()
  n = n + 1
  if n > count then n = 1 end
  return reqs[n]
end
`);
  return file;
}

// ---------------------------------------------------------------------------------------------
// Proxies.
function sessionlbConfig(port, backendPorts, scenario, memcachedPort, extras) {
  const upstream = {
    servers: backendPorts.map((p, i) => ({ address: `127.0.0.1:${p}`, weight: WEIGHTS[i] })),
    keepalive: CONNECTIONS,
  };
  if (scenario.stream) {
    const servers = scenario.pp2
      ? PP_BACKEND_PORTS.map((p, i) => ({ address: `127.0.0.1:${p}`, weight: WEIGHTS[i], sendProxy: 'v2' }))
      : upstream.servers;
    const backend = { servers };
    if (scenario.source) backend.sticky = { mode: 'source', ttl: '30m' };
    const config = {
      streams: [{ listen: [`127.0.0.1:${port}`], proxyPass: 'backend' }],
      upstreams: { backend },
      shutdownTimeout: '2s',
      workers: 1,
      ...extras,
    };
    if (scenario.source) config.sessionStore = { type: 'memcached', servers: [`127.0.0.1:${memcachedPort}`], keyPrefix: 'bench:', timeout: '50ms' };
    return config;
  }
  if (scenario.policy) upstream.balance = scenario.policy.balance;
  if (scenario.sticky) upstream.sticky = { mode: 'learn', cookie: 'PHPSESSID', ttl: '24m' };
  const server = { listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] };
  if (scenario.edge) {
    server.locations.push(...EDGE_REGEXES.map(([match, path]) => ({ path, match, proxyPass: 'http://backend' })));
    // Another location with an access list and a rate limit: what the bench's "/" must not pay for.
    server.locations.push({ path: '/api/', proxyPass: 'http://backend', access: EDGE_ACCESS.map(([rule, target]) => ({ [rule]: target })), limitReq: { zone: 'perip', burst: 20, nodelay: true } });
  }
  if (scenario.gzip) Object.assign(server, { gzip: true, gzipCompLevel: 1 });
  if (scenario.tls) {
    const c = tlsCerts();
    server.listen = [`127.0.0.1:${port} ssl`];
    server.ssl = { certificate: c.cert, certificateKey: c.key }; // protocols TLSv1.2 TLSv1.3, ciphers HIGH:!aNULL:!MD5: the defaults, as nginx's below
    if (scenario.h2) server.http2 = true;
  }
  const config = {
    servers: [server],
    upstreams: { backend: upstream },
    shutdownTimeout: '2s',
    clientMaxBodySize: '1m',
    workers: scenario.multi ? 2 : 1, // one process pinned to one core; the multi-core line: 2 (node:cluster)
    ...(scenario.edge ? { limitReqZones: { perip: { key: '$binary_remote_addr', rate: '10r/s' } } } : {}),
    ...extras,
  };
  if (scenario.sticky) config.sessionStore = { type: 'memcached', servers: [`127.0.0.1:${memcachedPort}`], keyPrefix: 'bench:', timeout: '50ms' };
  return config;
}

const checked = new Map();
/** Writes sessionlb's config for a scenario; null (with a reason) when `check` rejects it. */
function sessionlbConfigFile(port, backendPorts, scenario, memcachedPort) {
  const key = scenario.id;
  let extras = { accessLog: false };
  const cached = checked.get(key);
  if (cached !== undefined) {
    if (!cached.ok) return cached;
    extras = cached.extras;
  }
  const file = join(TMP, `sessionlb-${scenario.id.replace(/[^a-z0-9]+/gi, '_')}.json`);
  const write = () => writeFileSync(file, JSON.stringify(sessionlbConfig(port, backendPorts, scenario, memcachedPort, extras), null, 2));
  write();
  if (cached === undefined) {
    let r = sessionlbCheck(file);
    if (!r.ok && /accessLog/.test(r.output)) {
      extras = {}; // before the observability work lands: no access log key (and no access log)
      write();
      r = sessionlbCheck(file);
    }
    checked.set(key, { ok: r.ok, extras, reason: r.ok ? null : r.output.split('\n').filter((l) => /\$\./.test(l)).map((l) => l.replace(/^.*?: (?=\$)/, '')).join('; ') || r.output });
    if (!r.ok) return checked.get(key);
  }
  return { ok: true, file };
}

function nginxProxyConf(port, backendPorts, scenario, workers = 1) {
  let conf = nginxCommon(workers === 1 ? 'nginx-proxy' : 'nginx-workers', workers);
  let balance = '';
  if (scenario.policy) balance = `    ${scenario.policy.nginx}\n`;
  // nginx OSS has no `sticky learn`: the closest equivalent keyed on the session cookie is a consistent hash.
  if (scenario.sticky) balance = '    hash $cookie_PHPSESSID consistent;\n';
  conf += `  upstream backend {\n${balance}`;
  backendPorts.forEach((p, i) => { conf += `    server 127.0.0.1:${p}${WEIGHTS[i] !== 1 ? ` weight=${WEIGHTS[i]}` : ''};\n`; });
  conf += `    keepalive ${CONNECTIONS};\n    keepalive_requests 1000000;\n  }\n`;
  let listen = `listen 127.0.0.1:${port} backlog=4096;`;
  if (scenario.tls) {
    const c = tlsCerts();
    // nginx 1.22's default ssl_protocols still has TLSv1 and TLSv1.1: set sessionlb's (and nginx >= 1.23.4's) default.
    // ssl_ciphers HIGH:!aNULL:!MD5, session tickets on, no ssl_session_cache: nginx's defaults, as sessionlb's.
    listen = `listen 127.0.0.1:${port} ssl${scenario.h2 ? ' http2' : ''} backlog=4096;\n    ssl_certificate ${c.cert};\n    ssl_certificate_key ${c.key};\n    ssl_protocols TLSv1.2 TLSv1.3;`;
  }
  const edge = scenario.edge
    ? EDGE_REGEXES.map(([match, path]) => `    location ${match} ${path} {\n      proxy_pass http://backend;\n      proxy_http_version 1.1;\n      proxy_set_header Connection "";\n    }\n`).join('')
      + `    location /api/ {\n${EDGE_ACCESS.map(([rule, target]) => `      ${rule} ${target};\n`).join('')}      limit_req zone=perip burst=20 nodelay;\n      proxy_pass http://backend;\n      proxy_http_version 1.1;\n      proxy_set_header Connection "";\n    }\n`
    : '';
  if (scenario.edge) conf += '  limit_req_zone $binary_remote_addr zone=perip:10m rate=10r/s;\n';
  if (scenario.gzip) conf += '  gzip on;\n  gzip_comp_level 1;\n';
  conf += `  server {\n    ${listen}\n    location / {\n      proxy_pass http://backend;\n      proxy_http_version 1.1;\n      proxy_set_header Connection "";\n    }\n${edge}  }\n}\n`;
  return conf;
}

/**
 * nginx `stream {}` (scenario 6): the same weights, 1 worker, no log. `stream-pp2`: `proxy_protocol on`
 * (v1: nginx sends no v2) to the backends' proxy_protocol ports; `stream-source`: `hash $remote_addr
 * consistent` (nginx has no source affinity in a store), a reference line.
 */
function nginxStreamConf(port, backendPorts, scenario) {
  const t = join(TMP, 'nginx-stream');
  mkdirSync(t, { recursive: true, mode: 0o755 });
  let conf = NGINX_STREAM.load === null ? '' : `load_module ${NGINX_STREAM.load};\n`;
  conf += `worker_processes 1;\npid ${t}/nginx.pid;\nerror_log ${t}/error.log warn;\nevents { worker_connections 8192; multi_accept on; }\n`;
  conf += `stream {\n  upstream backend {\n${scenario.source ? '    hash $remote_addr consistent;\n' : ''}`;
  (scenario.pp2 ? PP_BACKEND_PORTS : backendPorts).forEach((p, i) => { conf += `    server 127.0.0.1:${p}${WEIGHTS[i] !== 1 ? ` weight=${WEIGHTS[i]}` : ''};\n`; });
  conf += `  }\n  server {\n    listen 127.0.0.1:${port} backlog=4096;\n    proxy_pass backend;\n${scenario.pp2 ? '    proxy_protocol on;\n' : ''}  }\n}\n`;
  return conf;
}

function haproxyConf(port, backendPorts, scenario) {
  let balance = 'balance roundrobin';
  if (scenario.policy) balance = scenario.policy.haproxy;
  let stick = '';
  if (scenario.sticky) stick = `  stick-table type string len 64 size 100k expire 24m\n  stick on req.cook(PHPSESSID)\n`;
  if (scenario.stream) {
    return `global
  nbthread 1
  maxconn 4096
defaults
  mode tcp
  timeout connect 60s
  timeout client 10m
  timeout server 10m
frontend fe
  bind 127.0.0.1:${port}
  default_backend be
backend be
  ${scenario.source ? 'balance source\n  hash-type consistent' : 'balance roundrobin'}
${(scenario.pp2 ? PP_BACKEND_PORTS : backendPorts).map((p, i) => `  server s${i + 1} 127.0.0.1:${p} weight ${WEIGHTS[i]}${scenario.pp2 ? ' send-proxy-v2' : ''}`).join('\n')}
`;
  }
  return `global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 60s
  timeout client 75s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:${port}${scenario.tls ? ` ssl crt ${tlsCerts().pem} ssl-min-ver TLSv1.2${scenario.h2 ? ' alpn h2,http/1.1' : ''}` : ''}
  default_backend be
backend be
  ${balance}
${stick}${backendPorts.map((p, i) => `  server s${i + 1} 127.0.0.1:${p} weight ${WEIGHTS[i]}`).join('\n')}
`;
}

/** Each returns { child, pid, port } started and ready, or { skip: reason }. */
const PROXIES = [];
/**
 * sessionlb as `npm start` runs it: one process pinned to the proxy core (the build in `root`:
 * this checkout, or one of BENCH_BUILDS), or `multi`: "workers": 2, unpinned, for the multi-core
 * scenario only. Either way the config passes `sessionlb check` first (sessionlbConfigFile).
 */
function sessionlbProxy(name, kind, { root = ROOT, multi = false }) {
  return {
    name,
    kind,
    async start(ctx, scenario) {
      if (Boolean(scenario.multi) !== multi) return { skip: 'n/a' };
      const port = await freePort();
      const cfg = sessionlbConfigFile(port, ctx.backendPorts, scenario, ctx.memcached?.port);
      if (!cfg.ok) return { skip: `sessionlb check rejects the config: ${cfg.reason}` };
      const args = [];
      // Profiles of the single process only (cluster workers would inherit --cpu-prof and its file name).
      if (CPU_PROF_DIR !== null && !multi) {
        mkdirSync(CPU_PROF_DIR, { recursive: true });
        args.push('--cpu-prof', `--cpu-prof-dir=${CPU_PROF_DIR}`, `--cpu-prof-name=${scenario.id.replace(/[^a-z0-9]+/gi, '_')}-${root === ROOT ? 'default' : basename(root)}-run${ctx.run}.cpuprofile`);
      }
      args.push(YOUNG_GENERATION_FLAG, join(root, 'dist', 'cli.js'), 'run', '--config', cfg.file);
      const child = startChild(process.execPath, args, {
        cpu: multi ? null : PROXY_CPU,
        logFile: join(TMP, multi ? 'sessionlb-workers.log' : 'sessionlb.log'),
      });
      await ready(port, scenario.path, child, scenario.tls);
      return { child, pid: child.pid, port };
    },
  };
}
PROXIES.push(sessionlbProxy('sessionlb', 'sessionlb', {}));
for (const dir of BUILDS) {
  if (!existsSync(join(dir, 'dist', 'cli.js'))) {
    log(`bench: ${dir}/dist/cli.js is missing; build that checkout first (npx tsc -p tsconfig.json there).`);
    process.exit(2);
  }
  PROXIES.push(sessionlbProxy(`sessionlb (${basename(resolve(dir))})`, 'sessionlb', { root: resolve(dir) }));
}
if (NGINX !== null) {
  PROXIES.push({
    name: 'nginx',
    kind: 'nginx',
    async start(ctx, scenario) {
      if (scenario.multi) return { skip: 'n/a' };
      if (scenario.stream && NGINX_STREAM === null) return { skip: 'nginx has no stream module (Debian: apt-get install libnginx-mod-stream)' };
      const port = await freePort();
      const file = join(TMP, 'nginx-proxy.conf');
      writeFileSync(file, scenario.stream ? nginxStreamConf(port, ctx.backendPorts, scenario) : nginxProxyConf(port, ctx.backendPorts, scenario));
      const child = startChild(NGINX, ['-p', TMP, '-e', join(TMP, 'nginx-proxy', 'stderr.log'), '-c', file, '-g', 'daemon off;'], { cpu: PROXY_CPU, logFile: join(TMP, 'nginx-proxy.log') });
      await ready(port, scenario.path, child, scenario.tls);
      return { child, pid: child.pid, port };
    },
  });
}
if (HAPROXY !== null) {
  PROXIES.push({
    name: 'haproxy',
    kind: 'haproxy',
    async start(ctx, scenario) {
      if (scenario.multi) return { skip: 'n/a' };
      const port = await freePort();
      const file = join(TMP, 'haproxy.cfg');
      writeFileSync(file, haproxyConf(port, ctx.backendPorts, scenario));
      const child = startChild(HAPROXY, ['-db', '-f', file], { cpu: PROXY_CPU, logFile: join(TMP, 'haproxy.log') });
      await ready(port, scenario.path, child, scenario.tls);
      return { child, pid: child.pid, port };
    },
  });
}
// The ceiling of any proxy with node:http on the client side (bench/floor-proxy.mjs: no header
// forwarding, no safety), for scenarios 1 and 3 only. Shows how much of the gap to nginx is node's.
PROXIES.push({
  name: 'node floor (not a proxy)',
  kind: 'floor',
  async start(ctx, scenario) {
    if (scenario.id !== 'plain' && scenario.id !== 'close') return { skip: 'n/a' };
    const port = await freePort();
    const ups = ctx.backendPorts.map((p, i) => `${p}*${WEIGHTS[i]}`);
    const child = startChild(process.execPath, [YOUNG_GENERATION_FLAG, join(ROOT, 'bench', 'floor-proxy.mjs'), String(port), ...ups], { cpu: PROXY_CPU, logFile: join(TMP, 'floor.log') });
    await ready(port, scenario.path, child, scenario.tls);
    return { child, pid: child.pid, port };
  },
});
// The ceiling of the setup: wrk straight against one backend port (no proxy at all).
PROXIES.push({
  name: 'direct (no proxy)',
  kind: 'direct',
  async start(ctx, scenario) {
    if (scenario.sticky || scenario.policy || scenario.multi || scenario.tls || scenario.pp2) return { skip: 'n/a' }; // the backends speak plain HTTP
    return { child: null, pid: null, port: ctx.backendPorts[0] };
  },
});
// Multi-core: sessionlb "workers": 2 (node:cluster) vs nginx worker_processes 2, both unpinned (scenario "multi" only).
PROXIES.push(sessionlbProxy('sessionlb (2 workers)', 'sessionlb-workers', { multi: true }));
if (NGINX !== null) {
  PROXIES.push({
    name: 'nginx (2 workers)',
    kind: 'nginx-workers',
    async start(ctx, scenario) {
      if (!scenario.multi) return { skip: 'n/a' };
      const port = await freePort();
      const file = join(TMP, 'nginx-workers.conf');
      writeFileSync(file, nginxProxyConf(port, ctx.backendPorts, scenario, 2));
      const child = startChild(NGINX, ['-p', TMP, '-e', join(TMP, 'nginx-workers', 'stderr.log'), '-c', file, '-g', 'daemon off;'], { logFile: join(TMP, 'nginx-workers.log') });
      await ready(port, scenario.path, child, scenario.tls);
      return { child, pid: child.pid, port };
    },
  });
}
const ACTIVE_PROXIES = PROXIES.filter((p) => PROXY_FILTER === null || PROXY_FILTER.has(p.name) || PROXY_FILTER.has(p.kind));

// ---------------------------------------------------------------------------------------------
// wrk.
function parseDuration(text) {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text);
  if (!m) return NaN;
  const v = Number(m[1]);
  return m[2] === 'us' ? v / 1000 : m[2] === 'ms' ? v : m[2] === 's' ? v * 1000 : v * 60_000;
}
function parseBytes(text) {
  const m = /^([\d.]+)([KMGT]?B)$/.exec(text);
  if (!m) return NaN;
  const mult = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3, TB: 1024 ** 4 }[m[2]];
  return Number(m[1]) * mult;
}
function parseWrk(out) {
  const num = (re) => { const m = re.exec(out); return m ? Number(m[1]) : NaN; };
  const lat = (p) => { const m = new RegExp(`^\\s+${p}%\\s+(\\S+)`, 'm').exec(out); return m ? parseDuration(m[1]) : NaN; };
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const transfer = /Transfer\/sec:\s+(\S+)/.exec(out);
  return {
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    bytesPerSec: transfer ? parseBytes(transfer[1]) : NaN,
    p50: lat(50),
    p99: lat(99),
    requests: num(/(\d+) requests in/),
    non2xx: num(/Non-2xx or 3xx responses: (\d+)/) || 0,
    socketErrors: sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0,
    socketDetail: sock ? sock[0] : '',
  };
}
/** The scenario's load for `seconds`: wrk, or `openssl s_time` (handshake scenarios), or h2load (HTTP/2). */
function runLoad(port, scenario, seconds, warmup = false) {
  if (scenario.l4) return runL4Clients(port, scenario, seconds, warmup);
  if (scenario.stime) return runSTime(port, scenario, seconds);
  if (scenario.h2) return runH2load(port, scenario, seconds);
  return runWrk(port, scenario, seconds);
}
function runWrk(port, scenario, seconds) {
  const args = ['-t1', `-c${CONNECTIONS}`, `-d${seconds}s`, '--latency', '--timeout', '5s'];
  if (scenario.close) args.push('-H', 'Connection: close');
  if (scenario.gzip) args.push('-H', 'Accept-Encoding: gzip');
  if (scenario.sticky) args.push('-s', luaCookieScript());
  args.push(`${scenario.tls ? 'https' : 'http'}://127.0.0.1:${port}${scenario.path}`);
  return runTool(WRK, args, seconds, parseWrk);
}
/**
 * Handshakes/s: STIME_CLIENTS `openssl s_time` processes side by side on the load CPU, each making
 * one connection at a time for `seconds` (-new: a full handshake each; -reuse: resuming the session of
 * its first connection). `-www /` makes each connection one HTTP/1.0 request: with TLS 1.3 the client
 * gets its session ticket only by reading after the handshake, so without a request nothing resumes.
 * The rate is connections over the wall time of the slowest client; `resumed` counts s_time's "r" marks.
 */
async function runSTime(port, scenario, seconds) {
  const args = ['s_time', '-connect', `127.0.0.1:${port}`, `-${scenario.stime}`, '-www', scenario.path, '-time', String(seconds)];
  const started = process.hrtime.bigint();
  const outs = await Promise.all(Array.from({ length: STIME_CLIENTS }, () => runTool(OPENSSL, args, seconds, (out) => out)));
  const wall = Number(process.hrtime.bigint() - started) / 1e9;
  let conns = 0;
  let resumed = 0;
  for (const out of outs) {
    const m = /(\d+) connections in [\d.]+s;/.exec(out);
    if (!m) throw new Error(`s_time printed no count: ${out.trim().split('\n').slice(-3).join(' / ')}`);
    conns += Number(m[1]);
    // The progress marks: "r" a resumed session, "*" (TLS 1.2+) a new one; one per connection, before the summary.
    const marks = out.slice(0, out.indexOf(m[0]));
    resumed += (marks.match(/r/g) ?? []).length;
  }
  return { rps: conns / wall, bytesPerSec: NaN, p50: NaN, p99: NaN, requests: conns, non2xx: 0, socketErrors: 0, socketDetail: '', resumed };
}
/**
 * bench/l4-clients.mjs (pinned to the load CPU like wrk): CONNECTIONS concurrent connections, each one
 * HTTP/1.1 request with Connection: close, from SOURCE_ADDRESSES loopback source addresses in turn.
 * The warm-up makes one connection from every address (at most 20 s), so the measured run sees known
 * clients (sticky source: bound, in the local cache and memcached), as a proxy does in steady state.
 */
function runL4Clients(port, scenario, seconds, warmup) {
  const args = [join(ROOT, 'bench', 'l4-clients.mjs'), String(port), '--concurrency', String(CONNECTIONS),
    '--addresses', String(SOURCE_ADDRESSES), '--path', scenario.path];
  let limit = seconds;
  if (warmup) {
    limit = Math.max(seconds, 20);
    args.push('--seconds', String(limit), '--max', String(SOURCE_ADDRESSES));
  } else {
    args.push('--seconds', String(seconds));
  }
  return runTool(process.execPath, args, limit, (out) => {
    const r = JSON.parse(out.trim().split('\n').pop());
    return {
      rps: r.rate,
      bytesPerSec: NaN,
      p50: r.p50,
      p99: r.p99,
      requests: r.connections,
      non2xx: r.non2xx,
      socketErrors: r.errors,
      socketDetail: `l4-clients errors ${JSON.stringify(r.errorKinds)}`,
    };
  });
}
/** h2load: 8 connections x 8 concurrent streams (64 streams), one thread, for `seconds`. */
function runH2load(port, scenario, seconds) {
  const args = ['-t1', '-c8', '-m8', '-D', String(seconds), `https://127.0.0.1:${port}${scenario.path}`];
  return runTool(H2LOAD, args, seconds, (out) => {
    const num = (re) => { const m = re.exec(out); return m ? Number(m[1]) : NaN; };
    const done = num(/requests: \d+ total, \d+ started, (\d+) done/);
    const failed = num(/(\d+) failed, (?:\d+) errored/);
    const errored = num(/\d+ failed, (\d+) errored/);
    return {
      rps: num(/finished in [\d.]+s, ([\d.]+) req\/s/),
      bytesPerSec: NaN,
      p50: NaN, // h2load reports min/max/mean request times, no percentiles
      p99: NaN,
      requests: done,
      // h2load -D counts requests still in flight at the end as done: the statuses say what failed.
      non2xx: ['3xx', '4xx', '5xx'].reduce((sum, k) => sum + (num(new RegExp(`(\\d+) ${k}`)) || 0), 0),
      socketErrors: (failed || 0) + (errored || 0),
      socketDetail: /requests: .*/.exec(out)?.[0] ?? '',
    };
  });
}
/** Runs a load tool pinned to the load CPU, killed after seconds + 30; resolves with parse(output). */
function runTool(cmd, args, seconds, parse) {
  const argv = pinnedArgv(cmd, args, LOAD_CPU);
  return new Promise((res, rej) => {
    const child = spawn(argv[0], argv[1], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    const t = setTimeout(() => { try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ } }, (seconds + 30) * 1000);
    child.on('close', (code) => { // 'close', not 'exit': all of its output has arrived
      clearTimeout(t);
      children.delete(child);
      if (code !== 0) rej(new Error(`${basename(cmd)} exited ${code}: ${out.trim().slice(-2000)}`));
      else res(parse(out));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Main loop: runs are interleaved (run 1 of every scenario and proxy, then run 2, ...).
const median = (xs) => {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  return v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
};
const fmtInt = (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en') : '-');
const fmtMs = (x) => (Number.isFinite(x) ? (x < 1 ? `${x.toFixed(2)} ms` : `${x.toFixed(1)} ms`) : '-');
const fmtMiB = (x) => (Number.isFinite(x) && x > 0 ? `${x.toFixed(0)} MiB` : '-');
const fmtUs = (x) => (Number.isFinite(x) ? `${x.toFixed(x < 100 ? 1 : 0)} us` : '-');
const fmtRatio = (x) => (Number.isFinite(x) ? x.toFixed(2) : '-');

async function main() {
  const started = Date.now();
  const backendPorts = [];
  for (let i = 0; i < 4; i++) backendPorts.push(await freePort());
  for (let i = 0; i < 4; i++) PP_BACKEND_PORTS.push(await freePort());
  const backends = await startBackends(backendPorts, PP_BACKEND_PORTS);
  const needsMemcached = SCENARIOS.some((s) => s.sticky || s.source);
  const memcached = needsMemcached ? await startBenchMemcached() : null;
  const ctx = { backendPorts, memcached, run: 0 };

  log(`bench: ${RUNS} run(s) x ${DURATION}s (+${WARMUP}s warm-up) per scenario and proxy, wrk -t1 -c${CONNECTIONS}`);
  log(`bench: backends ${backends.kind} on ports ${backendPorts.join(', ')} (weights ${WEIGHTS.join(',')})`);
  log(`bench: pinning ${PIN ? `proxy on CPU ${PROXY_CPU}, wrk + backends${memcached ? ' + memcached' : ''} on CPU ${LOAD_CPU} (taskset)` : `off (${TASKSET === null ? 'no taskset' : `${CPUS} CPU`})`}`);
  log(`bench: proxies: ${ACTIVE_PROXIES.map((p) => p.name).join(', ')}${NGINX === null ? ' (nginx not installed)' : ''}${HAPROXY === null ? ' (haproxy not installed)' : ''}`);
  if (needsMemcached && memcached === null) log('bench: memcached not installed: the sticky scenario is skipped');
  log(`bench: load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')} (other load on the machine makes numbers noisy)`);

  /** results[scenario.id][proxy.name] = { runs: [...], skip } */
  const results = new Map();
  for (const s of SCENARIOS) results.set(s.id, new Map(ACTIVE_PROXIES.map((p) => [p.name, { runs: [], skip: null }])));

  for (let run = 1; run <= RUNS; run++) {
    ctx.run = run;
    for (const scenario of SCENARIOS) {
      for (const proxy of ACTIVE_PROXIES) {
        const slot = results.get(scenario.id).get(proxy.name);
        if (slot.skip !== null) continue;
        if (scenario.sticky && memcached === null) { slot.skip = 'memcached not installed'; continue; }
        if (scenario.source && memcached === null && proxy.kind === 'sessionlb') { slot.skip = 'memcached not installed'; continue; }
        if (scenario.pp2 && !backends.pp) { slot.skip = 'needs the nginx backends (listen ... proxy_protocol)'; continue; }
        if (scenario.tls && tlsCerts().reason !== null) { slot.skip = `no certificate: ${tlsCerts().reason}`; continue; }
        if (scenario.h2 && H2LOAD === null) { slot.skip = 'h2load is not installed (Debian: apt-get install nghttp2-client)'; continue; }
        let handle;
        try {
          handle = await proxy.start(ctx, scenario);
        } catch (err) {
          slot.skip = `failed to start: ${err.message}`;
          log(`[run ${run}/${RUNS}] ${scenario.title} | ${proxy.name}: ${slot.skip}`);
          continue;
        }
        if (handle.skip) {
          slot.skip = handle.skip;
          if (handle.skip !== 'n/a') log(`[run ${run}/${RUNS}] ${scenario.title} | ${proxy.name}: skipped: ${handle.skip}`);
          continue;
        }
        try {
          const warm = WARMUP > 0 ? await runLoad(handle.port, scenario, WARMUP, true) : null;
          const cpuBefore = handle.pid !== null ? cpuMicros(handle.pid) : NaN;
          const r = await runLoad(handle.port, scenario, DURATION);
          r.cpuPerReq = handle.pid !== null ? (cpuMicros(handle.pid) - cpuBefore) / r.requests : NaN;
          if (CPU_PROF_DIR !== null && proxy.kind === 'sessionlb') log(`  profiled process served ${r.requests + (warm?.requests ?? 0)} requests (warm-up + run)`);
          r.rssMiB = handle.pid !== null ? peakRssMiB(handle.pid) : NaN;
          slot.runs.push(r);
          const errs = r.non2xx + r.socketErrors;
          log(`[run ${run}/${RUNS}] ${scenario.title} | ${proxy.name}: ${fmtInt(r.rps)} ${scenario.stime ? 'handshakes/s' : 'req/s'}${scenario.stime ? ` (${fmtInt(r.resumed)} of ${fmtInt(r.requests)} resumed)` : ''}${scenario.big ? ` (${(r.bytesPerSec / 2 ** 20).toFixed(0)} MiB/s)` : ''}, p50 ${fmtMs(r.p50)}, p99 ${fmtMs(r.p99)}, proxy CPU ${fmtUs(r.cpuPerReq)}/req, peak RSS ${fmtMiB(r.rssMiB)}${errs ? `, ERRORS: ${r.non2xx} non-2xx, ${r.socketDetail}` : ''}`);
        } catch (err) {
          log(`[run ${run}/${RUNS}] ${scenario.title} | ${proxy.name}: load failed: ${err.message}`);
        } finally {
          if (handle.child) await stopChild(handle.child, proxy.kind.startsWith('nginx') ? 'SIGQUIT' : 'SIGTERM');
        }
      }
    }
  }

  // Table.
  const lines = [];
  lines.push(`| proxy | scenario | req/s | MiB/s | p50 | p99 | CPU/req | peak RSS | vs nginx | vs nginx (CPU) | errors |`);
  lines.push(`|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|`);
  const summary = new Map();
  for (const scenario of SCENARIOS) {
    const byProxy = results.get(scenario.id);
    const med = (name) => {
      const slot = byProxy.get(name);
      if (!slot || slot.runs.length === 0) return null;
      const rs = slot.runs;
      return {
        rps: median(rs.map((r) => r.rps)),
        mibps: median(rs.map((r) => r.bytesPerSec / 2 ** 20)),
        p50: median(rs.map((r) => r.p50)),
        p99: median(rs.map((r) => r.p99)),
        rss: median(rs.map((r) => r.rssMiB)),
        cpu: median(rs.map((r) => r.cpuPerReq)),
        errors: rs.reduce((a, r) => a + r.non2xx + r.socketErrors, 0),
      };
    };
    const nginx = med(scenario.multi ? 'nginx (2 workers)' : 'nginx');
    for (const proxy of ACTIVE_PROXIES) {
      const slot = byProxy.get(proxy.name);
      const m = med(proxy.name);
      summary.set(`${scenario.id}|${proxy.name}`, m);
      if (m === null) {
        if (slot.skip && slot.skip !== 'n/a') lines.push(`| ${proxy.name} | ${scenario.title} | skipped: ${slot.skip.replace(/\|/g, '/').slice(0, 160)} | | | | | | | | |`);
        continue;
      }
      const ratio = nginx ? (scenario.big ? m.mibps / nginx.mibps : m.rps / nginx.rps) : NaN;
      // What the ratio would be with both CPU-bound on their core: nginx's CPU per request over ours.
      const cpuRatio = nginx ? nginx.cpu / m.cpu : NaN;
      lines.push(`| ${proxy.name} | ${scenario.title} | ${fmtInt(m.rps)} | ${scenario.big ? fmtInt(m.mibps) : ''} | ${fmtMs(m.p50)} | ${fmtMs(m.p99)} | ${fmtUs(m.cpu)} | ${fmtMiB(m.rss)} | ${fmtRatio(ratio)} | ${fmtRatio(cpuRatio)} | ${m.errors} |`);
    }
  }
  const notes = [];
  for (const proxy of ACTIVE_PROXIES.filter((p) => p.kind === 'sessionlb')) {
    const plain = summary.get(`plain|${proxy.name}`);
    const sticky = summary.get(`sticky|${proxy.name}`);
    const nginx = summary.get('plain|nginx');
    if (plain && nginx) notes.push(`${proxy.name}: goal 1 (plain >= 0.60 x nginx req/s, p99 <= 2 x nginx): ${fmtRatio(plain.rps / nginx.rps)} x req/s (by CPU per request: ${fmtRatio(nginx.cpu / plain.cpu)}), ${fmtRatio(plain.p99 / nginx.p99)} x p99`);
    if (plain && sticky) notes.push(`${proxy.name}: goal 2 (sticky learn >= 0.90 x plain): ${fmtRatio(sticky.rps / plain.rps)} (by CPU per request: ${fmtRatio(plain.cpu / sticky.cpu)})`);
    const close = summary.get(`close|${proxy.name}`);
    const nclose = summary.get('close|nginx');
    if (close && nclose) notes.push(`${proxy.name}: goal 3 (Connection: close >= 0.60 x nginx): ${fmtRatio(close.rps / nclose.rps)} (by CPU per request: ${fmtRatio(nclose.cpu / close.cpu)})`);
    const big = summary.get(`big|${proxy.name}`);
    const nbig = summary.get('big|nginx');
    if (big && nbig) notes.push(`${proxy.name}: goal 4 (1 MiB >= 0.80 x nginx MiB/s): ${fmtRatio(big.mibps / nbig.mibps)} (by CPU per response: ${fmtRatio(nbig.cpu / big.cpu)})`);
    if (plain) notes.push(`${proxy.name}: goal 5 (RSS <= 100 MiB at ${CONNECTIONS} connections): ${fmtMiB(plain.rss)} in scenario 1`);
    const stream = summary.get(`stream|${proxy.name}`);
    const nstream = summary.get('stream|nginx');
    if (stream && nstream) notes.push(`${proxy.name}: goal 6 (L4 stream keep-alive >= 0.90 x nginx stream req/s): ${fmtRatio(stream.rps / nstream.rps)} (by CPU per request: ${fmtRatio(nstream.cpu / stream.cpu)}), ${fmtRatio(stream.p99 / nstream.p99)} x p99`);
    const sclose = summary.get(`stream-close|${proxy.name}`);
    const nsclose = summary.get('stream-close|nginx');
    if (sclose && nsclose) notes.push(`${proxy.name}: goal 6 (L4 stream connections/s, Connection: close, >= 0.90 x nginx stream): ${fmtRatio(sclose.rps / nsclose.rps)} (by CPU per connection: ${fmtRatio(nsclose.cpu / sclose.cpu)})`);
    const pp2 = summary.get(`stream-pp2|${proxy.name}`);
    if (pp2 && stream) notes.push(`${proxy.name}: goal 6 (L4 stream with PROXY v2 sent within 5% of without, >= 0.95 x stream req/s): ${fmtRatio(pp2.rps / stream.rps)} (by CPU per request: ${fmtRatio(stream.cpu / pp2.cpu)})`);
    const npp2 = summary.get('stream-pp2|nginx');
    if (pp2 && npp2) notes.push(`${proxy.name}: stream-pp2 vs nginx stream with proxy_protocol on (v1): ${fmtRatio(pp2.rps / npp2.rps)} (by CPU per request: ${fmtRatio(npp2.cpu / pp2.cpu)})`);
    const src = summary.get(`stream-source|${proxy.name}`);
    const srcPlain = summary.get(`stream-source-plain|${proxy.name}`);
    if (src && srcPlain) notes.push(`${proxy.name}: goal 6 (L4 source affinity, ${SOURCE_ADDRESSES.toLocaleString('en')} client addresses, >= 0.90 x without): ${fmtRatio(src.rps / srcPlain.rps)} x connections/s, by CPU per connection: ${fmtRatio(srcPlain.cpu / src.cpu)} (the one to trust: l4-clients is node and may be the bottleneck)`);
    const nsrc = summary.get('stream-source|nginx');
    if (src && nsrc) notes.push(`${proxy.name}: stream-source vs nginx stream hash $remote_addr consistent (reference, no shared store): ${fmtRatio(src.rps / nsrc.rps)} (by CPU per connection: ${fmtRatio(nsrc.cpu / src.cpu)})`);
    const https = summary.get(`https|${proxy.name}`);
    const nhttps = summary.get('https|nginx');
    if (https && nhttps) notes.push(`${proxy.name}: goal 7 (HTTPS keep-alive >= 0.60 x nginx req/s): ${fmtRatio(https.rps / nhttps.rps)} (by CPU per request: ${fmtRatio(nhttps.cpu / https.cpu)}), ${fmtRatio(https.p99 / nhttps.p99)} x p99`);
    for (const [id, what] of [['https-close', 'full handshake per request, wrk, req/s'], ['https-new', 'full handshakes/s, s_time -new'], ['https-resume', 'resumed handshakes/s, s_time -reuse']]) {
      const m = summary.get(`${id}|${proxy.name}`);
      const n = summary.get(`${id}|nginx`);
      if (m && n) notes.push(`${proxy.name}: goal 8 (new TLS connections >= 0.80 x nginx; ${what}): ${fmtRatio(m.rps / n.rps)} (by CPU per ${id === 'https-close' ? 'request' : 'handshake'}: ${fmtRatio(n.cpu / m.cpu)})`);
    }
  }
  const multi = summary.get('multi|sessionlb (2 workers)');
  const nmulti = summary.get('multi|nginx (2 workers)');
  if (multi && nmulti) notes.push(`multi-core: sessionlb 2 workers vs nginx 2 workers (unpinned; wrk and the backends share a core with them): ${fmtRatio(multi.rps / nmulti.rps)} x req/s, ${fmtRatio(multi.p99 / nmulti.p99)} x p99`);
  const multiClose = summary.get('multi-close|sessionlb (2 workers)');
  const nmultiClose = summary.get('multi-close|nginx (2 workers)');
  if (multiClose && nmultiClose) notes.push(`multi-core, Connection: close: sessionlb 2 workers vs nginx 2 workers: ${fmtRatio(multiClose.rps / nmultiClose.rps)} x req/s`);
  for (const proxy of ACTIVE_PROXIES) {
    const h2 = summary.get(`http2|${proxy.name}`);
    const nh2 = summary.get('http2|nginx');
    if (proxy.kind === 'sessionlb' && h2 && nh2) notes.push(`${proxy.name}: goal 9 (HTTP/2 >= 0.50 x nginx http2 req/s, h2load -c8 -m8): ${fmtRatio(h2.rps / nh2.rps)} (by CPU per request: ${fmtRatio(nh2.cpu / h2.cpu)})`);
  }
  const elapsed = ((Date.now() - started) / 1000).toFixed(0);
  process.stdout.write(`\n${lines.join('\n')}\n\n`);
  process.stdout.write(`Median of ${RUNS} interleaved run(s), ${DURATION}s each, wrk -t1 -c${CONNECTIONS}; backends: ${backends.kind}; ${PIN ? `proxy pinned to CPU ${PROXY_CPU}, load generator and backends to CPU ${LOAD_CPU}` : 'not pinned'}; node ${process.version}, ${os.cpus()[0]?.model ?? 'cpu'} x${CPUS}; ${elapsed}s total.\n`);
  process.stdout.write('Scenario 2 for nginx is `hash $cookie_PHPSESSID consistent` (nginx OSS has no sticky learn). "direct" is wrk straight against one backend port: the ceiling of this setup.\n');
  if (SCENARIOS.some((sc) => sc.tls)) process.stdout.write(`TLS scenarios: one EC P-256 self-signed certificate for every proxy, TLSv1.2 + TLSv1.3, default ciphers. The s_time lines' req/s column is handshakes/s (${STIME_CLIENTS} parallel \`openssl s_time -www /\`, each one connection and one HTTP/1.0 request at a time) and CPU/req is the proxy's CPU per handshake.\n`);
  if (SCENARIOS.some((sc) => sc.l4)) process.stdout.write(`stream-source lines: bench/l4-clients.mjs (node, on the load CPU), ${CONNECTIONS} concurrent connections from ${SOURCE_ADDRESSES.toLocaleString('en')} loopback source addresses, one Connection: close request each; req/s is connections/s, CPU/req the proxy's CPU per connection (the generator may be the bottleneck: trust the CPU ratio). nginx's stream-source line is hash $remote_addr consistent; its stream-pp2 line sends PROXY v1 (nginx has no v2).\n`);
  if (notes.length) process.stdout.write(`\n${notes.map((n) => `- ${n}`).join('\n')}\n`);

  if (memcached) await stopChild(memcached.child);
  await stopChild(backends.child, NGINX !== null ? 'SIGQUIT' : 'SIGTERM');
  if (env.BENCH_JSON) {
    const out = {};
    for (const [sid, byProxy] of results) out[sid] = Object.fromEntries([...byProxy].map(([k, v]) => [k, v]));
    writeFileSync(env.BENCH_JSON, JSON.stringify({ runs: RUNS, duration: DURATION, connections: CONNECTIONS, results: out }, null, 2));
  }
  if (CPU_PROF_DIR !== null) log(`bench: CPU profiles in ${CPU_PROF_DIR} (summarise with: node bench/profile-top.mjs FILE [requests])`);
}

main().then(() => { cleanup(); }, (err) => {
  log(`bench: ${err.stack ?? err}`);
  killAllNow();
  cleanup();
  process.exit(1);
});
