/**
 * The event (error) log: health transitions, reloads, `no live upstreams`, upstream
 * failures. JSON lines by pino; `--pretty` switches to pino-pretty for humans.
 */
import { pino, type Logger } from 'pino';

export type EventLog = Logger;

export interface LogOptions {
  pretty?: boolean;
  level?: string;
  /** Where JSON lines go; default stderr (stdout is the access log's). */
  destination?: number | string;
}

export function createEventLog(options: LogOptions = {}): EventLog {
  const level = options.level ?? process.env.SESSIONLB_LOG_LEVEL ?? 'info';
  if (options.pretty) {
    return pino({ level, base: undefined }, pino.transport({
      target: 'pino-pretty',
      options: { destination: 2, colorize: process.stderr.isTTY, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' },
    }));
  }
  return pino({ level, base: { pid: process.pid } }, pino.destination({ dest: options.destination ?? 2, sync: false }));
}

/** A logger that drops everything (tests and embedding). */
export function silentLog(): EventLog {
  return pino({ level: 'silent' });
}
