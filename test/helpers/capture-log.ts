/** A pino event log that keeps its records in memory, and an in-process sessionlb using it. */
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { loadConfig } from '../../src/config/load.js';
import { SessionLB } from '../../src/runtime/sessionlb.js';
import type { EventLog } from '../../src/observability/log.js';
import { freePort, type RunningLB } from './net.js';

export interface LogRecord {
  level: number;
  msg: string;
  [key: string]: unknown;
}

export function captureLog(): { log: EventLog; records: LogRecord[] } {
  const records: LogRecord[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line !== '') records.push(JSON.parse(line) as LogRecord);
      cb();
    },
  });
  return { log: pino({ level: 'debug' }, stream), records };
}

/** Like startLB, with a capturing log; `raw` has no `servers` (one proxying / to "backend" is added) or is a whole config. */
export async function startLBWithLog(raw: Record<string, unknown>): Promise<RunningLB & { records: LogRecord[]; configFor(raw: Record<string, unknown>): Record<string, unknown> }> {
  const port = await freePort();
  const adminPort = await freePort();
  const configFor = (r: Record<string, unknown>): Record<string, unknown> => {
    const c: Record<string, unknown> = {
      servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      ...r,
    };
    if (c.admin === undefined) c.admin = { listen: `127.0.0.1:${adminPort}` };
    else c.admin = { listen: `127.0.0.1:${adminPort}`, ...(c.admin as Record<string, unknown>) };
    return c;
  };
  const { log, records } = captureLog();
  const lb = new SessionLB(await loadConfig(configFor(raw), '<test>'), { log });
  await lb.start();
  return { lb, port, adminPort, url: `http://127.0.0.1:${port}`, stop: () => lb.stop(2000), records, configFor };
}

/** Polls `check` every 20 ms until it returns true or `timeoutMs` passes; returns whether it did. */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return check();
}
