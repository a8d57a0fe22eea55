/**
 * nginx's limit_req and limit_conn: the zones (top level `limitReqZones`, `limitConnZones`) and
 * the per-level keys of the top level, a server and a location (spread into their schemas by
 * schema.ts). A level that sets `limitReq` (or `limitConn`) replaces its parent's list, as nginx
 * inherits them; the other keys come from the nearest level that sets them.
 */
import { z } from 'zod';
import { SIZE_PATTERN } from '../nginx-language/units.js';

export const LIMIT_LOG_LEVELS = ['info', 'notice', 'warn', 'error'] as const;

const bool = z.boolean({ error: 'must be true or false' });
const zoneName = z.string({ error: 'must be the name of a zone' }).min(1, { error: 'must be the name of a zone' });
const zoneSize = z.string({ error: 'must be a size such as "10m" (at least "32k")' })
  .regex(new RegExp(SIZE_PATTERN), { error: 'must be a size such as "10m" (at least "32k")' });
const key = z.string({ error: 'must be a key such as "$binary_remote_addr"' })
  .describe('what is counted: a template of nginx variables such as "$binary_remote_addr" or "$server_name" (a request whose key is empty is not counted)');
const positive = (what: string) => z.number({ error: `must be an integer >= 1 (${what})` }).int({ error: `must be an integer >= 1 (${what})` })
  .min(1, { error: `must be an integer >= 1 (${what})` });
const status = z.number({ error: 'must be a status code from 400 to 599' }).int({ error: 'must be a status code from 400 to 599' })
  .min(400, { error: 'must be a status code from 400 to 599' }).max(599, { error: 'must be a status code from 400 to 599' });
const logLevel = z.enum(LIMIT_LOG_LEVELS, { error: `must be one of ${LIMIT_LOG_LEVELS.map((l) => `"${l}"`).join(', ')}` });

export const limitReqZoneSchema = z.strictObject({
  key,
  rate: z.string({ error: 'must be a rate such as "10r/s" or "30r/m"' })
    .regex(/^[1-9][0-9]{0,8}r\/[sm]$/, { error: 'must be a rate such as "10r/s" or "30r/m"' })
    .describe('nginx rate=: requests per second ("10r/s") or per minute ("30r/m")'),
  size: zoneSize.optional().describe('nginx zone=NAME:SIZE: the memory for the keys\' states (default "10m", about 80 thousand keys); when full, the least recently used key is dropped'),
  shared: bool.optional()
    .describe('beyond nginx: count in the sessionStore\'s memcached, so the limit holds across every sessionlb instance; when memcached is unavailable each instance limits on its own (counted and logged) (default false)'),
});

export const limitConnZoneSchema = z.strictObject({
  key,
  size: zoneSize.optional().describe('nginx zone=NAME:SIZE: the memory for the keys\' counters (default "10m"); when full, requests with a new key are refused'),
});

const limitReqRule = z.strictObject({
  zone: zoneName.describe('a name in limitReqZones'),
  burst: z.number({ error: 'must be an integer >= 0' }).int({ error: 'must be an integer >= 0' }).min(0, { error: 'must be an integer >= 0' }).optional()
    .describe('nginx burst=: requests over the rate that wait (or pass, with nodelay) instead of being refused (default 0)'),
  nodelay: bool.optional().describe('nginx nodelay: requests within the burst are not delayed'),
  delay: positive('nginx delay=').optional().describe('nginx delay=: the first N requests over the rate are not delayed, the rest of the burst are'),
});

const limitConnRule = z.strictObject({
  zone: zoneName.describe('a name in limitConnZones'),
  conn: positive('nginx limit_conn NUMBER').describe('the requests in progress allowed per key'),
});

export const limitZoneKeys = {
  limitReqZones: z.record(z.string(), limitReqZoneSchema, { error: 'must be an object of named zones such as {"perip": {"key": "$binary_remote_addr", "rate": "10r/s"}}' }).optional()
    .describe('nginx limit_req_zone: named request-rate zones, used by limitReq'),
  limitConnZones: z.record(z.string(), limitConnZoneSchema, { error: 'must be an object of named zones such as {"addr": {"key": "$binary_remote_addr"}}' }).optional()
    .describe('nginx limit_conn_zone: named zones counting requests in progress, used by limitConn'),
};

export const limitKeys = {
  limitReq: z.union([limitReqRule, z.array(limitReqRule)], { error: 'must be {"zone": "NAME", "burst": N, "nodelay": true} or an array of them' }).optional()
    .describe('nginx limit_req: requests over the zone\'s rate are delayed or refused (limitReqStatus); several zones apply together; replaces the enclosing level\'s; [] = none'),
  limitReqStatus: status.optional().describe('nginx limit_req_status (default 503)'),
  limitReqDryRun: bool.optional().describe('nginx limit_req_dry_run: count and log, never delay or refuse (default false)'),
  limitReqLogLevel: logLevel.optional().describe('nginx limit_req_log_level: of the refusals ("error" by default); delays are logged one level lower'),
  limitConn: z.union([limitConnRule, z.array(limitConnRule)], { error: 'must be {"zone": "NAME", "conn": N} or an array of them' }).optional()
    .describe('nginx limit_conn: at most `conn` requests in progress per key (refused with limitConnStatus); replaces the enclosing level\'s; [] = none'),
  limitConnStatus: status.optional().describe('nginx limit_conn_status (default 503)'),
  limitConnDryRun: bool.optional().describe('nginx limit_conn_dry_run: count and log, never refuse (default false)'),
  limitConnLogLevel: logLevel.optional().describe('nginx limit_conn_log_level ("error" by default)'),
};
