/** nginx `upstream NAME { server ...; balancing method; keepalive; sticky; }` -> `upstreams.NAME`. */
import type { RawUpstream, RawUpstreamServer } from '../../config/schema.js';
import { formatHostPort, parseHostPort } from '../../nginx-language/address.js';
import type { NginxDirective } from './tokenizer.js';
import type { Conversion, Upstream } from './conversion.js';
import { isInt, nginxDuration } from './values.js';

export function convertUpstream(c: Conversion, d: NginxDirective): void {
  if (d.block === null || d.args.length !== 1) {
    c.error(d.line, `"upstream" needs a name and a block: upstream NAME { server ADDRESS; }`);
    return;
  }
  const name = d.args[0]!;
  if (c.upstreams.has(name)) {
    c.error(d.line, `duplicate upstream "${name}" (first defined on ${c.at(c.upstreamLines.get(name)!)})`);
    return;
  }
  const up: Upstream = { servers: [] };
  let balanceLine = 0;
  const setBalance = (line: number, balance: NonNullable<RawUpstream['balance']>): void => {
    if (balanceLine !== 0) c.warn(line, `load balancing method redefined (was set on ${c.at(balanceLine)}); the last one is used, as in nginx`);
    balanceLine = line;
    up.balance = balance;
  };
  for (const item of d.block) {
    switch (item.name) {
      case 'server': {
        const s = upstreamServer(c, item);
        if (s) up.servers.push(s);
        break;
      }
      case 'keepalive': {
        const a = c.oneArg(item);
        if (a !== null && isInt(a)) up.keepalive = Number(a);
        else if (a !== null) c.error(item.line, `"keepalive": "${a}" is not a number`);
        break;
      }
      case 'keepalive_timeout': {
        const a = c.oneArg(item);
        const v = a === null ? null : nginxDuration(a);
        if (v === null) c.error(item.line, `"keepalive_timeout": "${item.args.join(' ')}" is not a time`);
        else up.keepaliveTimeout = v;
        break;
      }
      case 'least_conn':
        setBalance(item.line, 'least_conn');
        break;
      case 'ip_hash':
        setBalance(item.line, 'ip_hash');
        break;
      case 'least_time':
        c.warn(item.line, `"least_time" (nginx Plus) is not supported by sessionlb; using "least_conn" instead`);
        setBalance(item.line, 'least_conn');
        break;
      case 'hash': {
        const key = item.args[0];
        if (key === undefined || item.args.length > 2 || (item.args.length === 2 && item.args[1] !== 'consistent')) {
          c.error(item.line, `"hash" takes a key and optionally "consistent": hash $cookie_PHPSESSID consistent`);
          break;
        }
        setBalance(item.line, item.args[1] === 'consistent' ? { hash: key, consistent: true } : { hash: key });
        break;
      }
      case 'random': {
        const [two, method, ...rest] = item.args;
        if (two === undefined) {
          setBalance(item.line, 'random');
        } else if (two !== 'two' || rest.length > 0) {
          c.error(item.line, `invalid parameters in "random ${item.args.join(' ')}" (expected: random [two [least_conn]])`);
        } else if (method === undefined || method === 'least_conn') {
          setBalance(item.line, method === undefined ? { random: 'two' } : { random: 'two', pick: 'least_conn' });
        } else {
          c.warn(item.line, `"random two ${method}" is not supported by sessionlb; using "random two least_conn"`);
          setBalance(item.line, { random: 'two', pick: 'least_conn' });
        }
        break;
      }
      case 'zone':
        c.warn(item.line, `"zone" is not needed: sessionlb keeps server state in its own process (share session bindings through "sessionStore"); ignored`);
        break;
      case 'sticky':
        sticky(c, item, up);
        break;
      default:
        c.unsupported(item, `in upstream "${name}"`);
    }
  }
  if (up.servers.length === 0) c.error(d.line, `upstream "${name}" has no usable servers`);
  c.upstreams.set(name, up);
  c.upstreamLines.set(name, d.line);
}

function upstreamServer(c: Conversion, d: NginxDirective): RawUpstreamServer | null {
  const addr = c.oneArg(d);
  if (addr === null) return null;
  if (addr.startsWith('unix:')) {
    c.error(d.line, `server "${addr}": unix sockets are not supported by sessionlb (use host:port)`);
    return null;
  }
  const hp = parseHostPort(addr, 80);
  if (typeof hp === 'string') {
    c.error(d.line, `server "${addr}": ${hp}`);
    return null;
  }
  // nginx's default port is 80; write it out so the JSON says what it means.
  const s: RawUpstreamServer = { address: /:\d+$/.test(addr) && !addr.endsWith(']') ? addr : formatHostPort(hp.host, hp.port) };
  for (const p of d.args.slice(1)) {
    const eq = p.indexOf('=');
    const key = eq === -1 ? p : p.slice(0, eq);
    const value = eq === -1 ? '' : p.slice(eq + 1);
    const int = (set: (n: number) => void): void => {
      if (isInt(value)) set(Number(value));
      else c.error(d.line, `invalid parameter "${p}" of server ${addr} (expected a number)`);
    };
    const time = (set: (t: string) => void): void => {
      const t = nginxDuration(value);
      if (t !== null) set(t);
      else c.error(d.line, `invalid parameter "${p}" of server ${addr} (expected a time such as "10s")`);
    };
    switch (key) {
      case 'weight': int((n) => { s.weight = n; }); break;
      case 'max_fails': int((n) => { s.maxFails = n; }); break;
      case 'max_conns': int((n) => { s.maxConns = n; }); break;
      case 'fail_timeout': time((t) => { s.failTimeout = t; }); break;
      case 'slow_start': time((t) => { s.slowStart = t; }); break;
      case 'backup': s.backup = true; break;
      case 'down': s.down = true; break;
      case 'drain': s.drain = true; break;
      case 'resolve':
        c.warn(d.line, `server ${addr}: "resolve" is not supported; sessionlb resolves hostnames at start and on reload only`);
        break;
      default:
        c.warn(d.line, `server ${addr}: parameter "${p}" is not supported by sessionlb; ignored`);
    }
  }
  return s;
}

/** nginx Plus `sticky learn ...` / `sticky cookie NAME ...`. */
function sticky(c: Conversion, d: NginxDirective, up: Upstream): void {
  const [mode, ...params] = d.args;
  const named = (p: string): [string, string] => {
    const eq = p.indexOf('=');
    return eq === -1 ? [p, ''] : [p.slice(0, eq), p.slice(eq + 1)];
  };
  if (mode === 'learn') {
    let create = '';
    let lookup = '';
    let ttl: string | null = null;
    for (const p of params) {
      const [k, v] = named(p);
      if (k === 'create') create = v;
      else if (k === 'lookup') lookup = v;
      else if (k === 'timeout') {
        ttl = nginxDuration(v);
        if (ttl === null) c.error(d.line, `"sticky learn": "${p}" is not a time`);
      } else if (k !== 'zone') c.warn(d.line, `"sticky learn": parameter "${p}" is not supported by sessionlb; ignored`);
    }
    const created = /^\$upstream_cookie_([A-Za-z0-9_-]+)$/.exec(create)?.[1];
    const looked = /^\$cookie_([A-Za-z0-9_-]+)$/.exec(lookup)?.[1];
    if (created === undefined || looked === undefined || created.toLowerCase() !== looked.toLowerCase()) {
      c.warn(d.line, `"sticky learn" is converted only in the form create=$upstream_cookie_NAME lookup=$cookie_NAME (the same cookie); ignored`);
      return;
    }
    up.sticky = { mode: 'learn', cookie: created, ...(ttl !== null ? { ttl } : {}) };
    c.notes.push({ line: d.line, message: `"sticky learn": bindings live in "sessionStore" (the embedded "memory" store unless you add {"type": "memcached", "servers": [...]}); "zone" is not needed` });
    return;
  }
  if (mode === 'cookie') {
    const [cookie, ...rest] = params;
    if (cookie === undefined || cookie.includes('=')) {
      c.error(d.line, `"sticky cookie" needs a cookie name`);
      return;
    }
    for (const p of rest) {
      const [k] = named(p);
      if (k !== 'httponly' && k !== 'secure') {
        c.warn(d.line, `"sticky cookie": parameter "${p}" is not supported (sessionlb's cookie is a session cookie with Path=/, HttpOnly, SameSite=Lax, signed); ignored`);
      }
    }
    up.sticky = { mode: 'cookie', cookie };
    return;
  }
  c.warn(d.line, `"sticky ${mode ?? ''}" is not supported by sessionlb (only "learn" and "cookie"); ignored`);
}
