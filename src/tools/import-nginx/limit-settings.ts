/**
 * nginx ngx_http_limit_req_module and ngx_http_limit_conn_module: `limit_req_zone` and
 * `limit_conn_zone` (http only) -> the top-level `limitReqZones` / `limitConnZones`; `limit_req`,
 * `limit_conn` and their `_status`, `_dry_run`, `_log_level` (http, server, location) -> the
 * `limitReq*` / `limitConn*` keys at the same level (limits-schema.ts: a level with any
 * `limitReq` replaces its parent's list, as nginx inherits it, so each level's own are written).
 * Values nginx refuses are errors with their line; `limit_rate*` (bandwidth) is a warning.
 */
import { compileTemplate } from '../../nginx-language/variables.js';
import { parseSize } from '../../nginx-language/units.js';
import { LIMIT_LOG_LEVELS } from '../../config/limits-schema.js';
import type { Conversion } from './conversion.js';
import type { NginxDirective } from './tokenizer.js';

interface LimitReqRule { zone: string; burst?: number; nodelay?: true; delay?: number }
interface LimitConnRule { zone: string; conn: number }
type LogLevel = (typeof LIMIT_LOG_LEVELS)[number];

/** What one level's limit directives give, in the order written. */
export interface LimitScope {
  limitReq?: LimitReqRule[];
  limitReqStatus?: number;
  limitReqDryRun?: boolean;
  limitReqLogLevel?: LogLevel;
  limitConn?: LimitConnRule[];
  limitConnStatus?: number;
  limitConnDryRun?: boolean;
  limitConnLogLevel?: LogLevel;
}

const LEVEL_DIRECTIVES = new Set([
  'limit_req', 'limit_req_status', 'limit_req_dry_run', 'limit_req_log_level',
  'limit_conn', 'limit_conn_status', 'limit_conn_dry_run', 'limit_conn_log_level',
  'limit_rate', 'limit_rate_after', 'limit_req_zone', 'limit_conn_zone',
]);

/** `limit_req_zone` / `limit_conn_zone`: read once for the whole http block (limit-settings' zones). */
export function isLimitZoneDirective(d: NginxDirective): boolean {
  return d.block === null && (d.name === 'limit_req_zone' || d.name === 'limit_conn_zone');
}

/** Whether `d` is one of the directives this file handles at a level (`limit_except` is access-settings.ts'). */
export function isLimitDirective(d: NginxDirective): boolean {
  return d.block === null && LEVEL_DIRECTIVES.has(d.name);
}

/**
 * The key of a zone: nginx's complex value, checked against the variables sessionlb knows
 * (`$binary_remote_addr` passes as it is: sessionlb counts it as nginx does); another variable
 * is written as it is, with a warning.
 */
function zoneKey(c: Conversion, d: NginxDirective, key: string): void {
  const checked = key.replace(/\$\{binary_remote_addr\}|\$binary_remote_addr(?![A-Za-z0-9_])/g, '$remote_addr');
  const compiled = compileTemplate(checked, { serverName: '' });
  if (typeof compiled === 'string') {
    c.warn(d.line, `"${d.name}" key "${key}": ${compiled}; written as it is, sessionlb's check will refuse it`);
  }
}

/** `zone=NAME:SIZE` as nginx reads it; null after an error. */
function zoneParam(c: Conversion, d: NginxDirective, p: string): { name: string; size: string } | null {
  const spec = p.slice(5);
  const colon = spec.indexOf(':');
  const size = colon === -1 ? NaN : parseSize(spec.slice(colon + 1));
  if (colon === -1 || Number.isNaN(size)) {
    c.error(d.line, `"${d.name}": invalid zone size "${p}"`);
    return null;
  }
  if (size < 32 * 1024) {
    c.error(d.line, `"${d.name}": zone "${p}" is too small (nginx wants at least 32k, 8 memory pages)`);
    return null;
  }
  if (colon === 0) {
    c.error(d.line, `"${d.name}" must have "zone" parameter with a name`);
    return null;
  }
  return { name: spec.slice(0, colon), size: spec.slice(colon + 1) };
}

/** nginx `limit_req_zone KEY zone=NAME:SIZE [rate=N r/s|r/m] [sync]` / `limit_conn_zone KEY zone=NAME:SIZE` into the conversion's zones. */
export function limitZoneDirective(c: Conversion, d: NginxDirective): void {
  const [key, ...params] = d.args;
  if (key === undefined || params.length === 0) {
    c.error(d.line, `invalid number of arguments in "${d.name}" directive`);
    return;
  }
  const req = d.name === 'limit_req_zone';
  let zone: { name: string; size: string } | null = null;
  let rate: string | null = null;
  let sync = false;
  for (const p of params) {
    if (p.startsWith('zone=')) {
      zone = zoneParam(c, d, p);
      if (zone === null) return;
    } else if (req && p.startsWith('rate=')) {
      // nginx: a number, then "r/s" or "r/m" (no unit: per second), above 0.
      const m = /^rate=(\d+)(r\/s|r\/m)?$/.exec(p);
      const n = m === null ? 0 : Number(m[1]);
      if (m === null || n <= 0 || n > 999_999_999) {
        c.error(d.line, `"limit_req_zone": invalid rate "${p}" (a number of requests per second or minute: "10r/s", "30r/m")`);
        return;
      }
      rate = `${n}${m[2] ?? 'r/s'}`;
    } else if (req && p === 'sync') {
      sync = true;
    } else {
      c.error(d.line, `"${d.name}": invalid parameter "${p}"`);
      return;
    }
  }
  if (zone === null) {
    c.error(d.line, `"${d.name}" must have "zone" parameter`);
    return;
  }
  const zones = req ? c.limitReqZones : c.limitConnZones;
  const existing = zones.get(zone.name);
  if (existing !== undefined) {
    c.error(d.line, `"${d.name}": zone "${zone.name}" is already defined (${c.at(existing.line)}); nginx refuses a second one`);
    return;
  }
  zoneKey(c, d, key);
  if (!req) {
    c.limitConnZones.set(zone.name, { value: { key, size: zone.size }, line: d.line });
    return;
  }
  if (rate === null) {
    // nginx takes 1r/s when rate= is left out; written out, so the file says what it does.
    c.warn(d.line, `"limit_req_zone" without "rate=": nginx's default of 1 request per second is written as "rate": "1r/s"`);
    rate = '1r/s';
  }
  if (sync) {
    c.warn(d.line, `"limit_req_zone ... sync" (nginx Plus zone synchronisation): sessionlb's equivalent is "shared": true on the zone (counted in the sessionStore's memcached), which is not set by the import; add it if the limit must hold across instances`);
  }
  c.limitReqZones.set(zone.name, { value: { key, rate, size: zone.size }, line: d.line });
}

function onOff(c: Conversion, d: NginxDirective, set: (v: boolean) => void): void {
  const a = d.args[0];
  if (d.args.length !== 1 || (a !== 'on' && a !== 'off')) c.error(d.line, `"${d.name}": must be "on" or "off"`);
  else set(a === 'on');
}

function status(c: Conversion, d: NginxDirective, set: (v: number) => void): void {
  const a = d.args[0] ?? '';
  if (d.args.length !== 1 || !/^\d+$/.test(a) || Number(a) < 400 || Number(a) > 599) {
    c.error(d.line, `"${d.name}": value must be between 400 and 599`);
  } else {
    set(Number(a));
  }
}

function logLevel(c: Conversion, d: NginxDirective, set: (v: LogLevel) => void): void {
  const a = d.args[0] ?? '';
  if (d.args.length !== 1 || !(LIMIT_LOG_LEVELS as readonly string[]).includes(a)) {
    c.error(d.line, `"${d.name}": must be one of ${LIMIT_LOG_LEVELS.join(', ')}`);
  } else {
    set(a as LogLevel);
  }
}

/** One limit directive of a level (`level`: where it is written) into `scope`. */
export function limitDirective(c: Conversion, d: NginxDirective, scope: LimitScope, level: 'http' | 'server' | 'location'): void {
  switch (d.name) {
    case 'limit_req_zone':
    case 'limit_conn_zone':
      // Only http's reach here through converter.ts' first pass; nginx refuses them elsewhere.
      c.error(d.line, `"${d.name}" directive is not allowed here (${level}): nginx takes it in http only`);
      return;
    case 'limit_req': {
      let zone: string | null = null;
      const rule: Omit<LimitReqRule, 'zone'> = {};
      for (const p of d.args) {
        const int = (text: string): number | null => (/^\d{1,9}$/.test(text) && Number(text) > 0 ? Number(text) : null);
        if (p.startsWith('zone=')) {
          zone = p.slice(5);
        } else if (p.startsWith('burst=')) {
          const n = int(p.slice(6));
          if (n === null) { c.error(d.line, `"limit_req": invalid burst value "${p}"`); return; }
          rule.burst = n;
        } else if (p.startsWith('delay=')) {
          const n = int(p.slice(6));
          if (n === null) { c.error(d.line, `"limit_req": invalid delay value "${p}"`); return; }
          // nginx: the last of nodelay / delay= counts.
          delete rule.nodelay;
          rule.delay = n;
        } else if (p === 'nodelay') {
          delete rule.delay;
          rule.nodelay = true;
        } else {
          c.error(d.line, `"limit_req": invalid parameter "${p}"`);
          return;
        }
      }
      if (zone === null || zone === '') {
        c.error(d.line, `"limit_req" must have "zone" parameter`);
        return;
      }
      addRule(c, d.line, 'limit_req', c.limitReqZones, scope.limitReq ??= [], { zone, ...rule });
      return;
    }
    case 'limit_conn': {
      const [zone, number] = d.args;
      if (zone === undefined || number === undefined || d.args.length !== 2) {
        c.error(d.line, 'invalid number of arguments in "limit_conn" directive (expected ZONE NUMBER)');
        return;
      }
      if (!/^\d{1,9}$/.test(number) || Number(number) <= 0) {
        c.error(d.line, `"limit_conn": invalid number of connections "${number}"`);
        return;
      }
      if (Number(number) > 65535) {
        c.error(d.line, '"limit_conn": connection limit must be less 65536');
        return;
      }
      addRule(c, d.line, 'limit_conn', c.limitConnZones, scope.limitConn ??= [], { zone, conn: Number(number) });
      return;
    }
    case 'limit_req_status': status(c, d, (v) => { scope.limitReqStatus = v; }); return;
    case 'limit_conn_status': status(c, d, (v) => { scope.limitConnStatus = v; }); return;
    case 'limit_req_dry_run': onOff(c, d, (v) => { scope.limitReqDryRun = v; }); return;
    case 'limit_conn_dry_run': onOff(c, d, (v) => { scope.limitConnDryRun = v; }); return;
    case 'limit_req_log_level': logLevel(c, d, (v) => { scope.limitReqLogLevel = v; }); return;
    case 'limit_conn_log_level': logLevel(c, d, (v) => { scope.limitConnLogLevel = v; }); return;
    default:
      // limit_rate, limit_rate_after
      c.warn(d.line, `"${d.name}": bandwidth limits (limit_rate, limit_rate_after) are not supported by sessionlb; ignored`);
  }
}

/** `scope`'s keys on the output object of its level: one rule as an object, several as an array. */
export function writeLimits(scope: LimitScope, out: Record<string, unknown>): void {
  const one = <T>(list: T[]): T | T[] => (list.length === 1 ? list[0]! : list);
  if (scope.limitReq !== undefined) out.limitReq = one(scope.limitReq);
  if (scope.limitReqStatus !== undefined) out.limitReqStatus = scope.limitReqStatus;
  if (scope.limitReqDryRun !== undefined) out.limitReqDryRun = scope.limitReqDryRun;
  if (scope.limitReqLogLevel !== undefined) out.limitReqLogLevel = scope.limitReqLogLevel;
  if (scope.limitConn !== undefined) out.limitConn = one(scope.limitConn);
  if (scope.limitConnStatus !== undefined) out.limitConnStatus = scope.limitConnStatus;
  if (scope.limitConnDryRun !== undefined) out.limitConnDryRun = scope.limitConnDryRun;
  if (scope.limitConnLogLevel !== undefined) out.limitConnLogLevel = scope.limitConnLogLevel;
}

/** The zones as the top level's `limitReqZones` / `limitConnZones`, in the order written. */
export function writeLimitZones(c: Conversion, out: Record<string, unknown>): void {
  if (c.limitReqZones.size > 0) out.limitReqZones = Object.fromEntries([...c.limitReqZones].map(([n, z]) => [n, z.value]));
  if (c.limitConnZones.size > 0) out.limitConnZones = Object.fromEntries([...c.limitConnZones].map(([n, z]) => [n, z.value]));
}

/** A limit_req / limit_conn rule into its level's list: its zone must be defined in http, and not be limited there already (nginx). */
function addRule<R extends { zone: string }>(c: Conversion, line: number, directive: 'limit_req' | 'limit_conn', zones: ReadonlyMap<string, unknown>, list: R[], rule: R): void {
  if (!zones.has(rule.zone)) {
    c.error(line, `"${directive}": unknown ${directive}_zone "${rule.zone}" (no "${directive}_zone ... zone=${rule.zone}:SIZE" in http)`);
    return;
  }
  if (list.some((r) => r.zone === rule.zone)) {
    c.error(line, `"${directive}" directive is duplicate: zone "${rule.zone}" is already limited at this level`);
    return;
  }
  list.push(rule);
}

