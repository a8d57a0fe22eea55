/**
 * The zones of a process (nginx's shared memory zones of limit_req_zone / limit_conn_zone): made
 * from the config, kept across reloads while a zone's definition (key, rate, size) is unchanged,
 * as nginx keeps a zone's memory when its definition does not change; a changed or new zone starts
 * empty. In a cluster the primary holds them for every worker (runtime/ipc-limits.ts).
 */
import { ConnectionZone } from './connection-zone.js';
import { RequestZone } from './request-zone.js';

/** What a zone is made of (config/limits.ts's zone configs satisfy it). */
export interface RequestZoneDefinition { readonly name: string; readonly keyText: string; readonly rate: number; readonly sizeBytes: number }
export interface ConnectionZoneDefinition { readonly name: string; readonly keyText: string; readonly sizeBytes: number }

/** A zone's figures, for metrics. */
export interface ZoneFigures {
  zone: string;
  type: 'req' | 'conn';
  keys: number;
  evicted: number;
  expired: number;
  allocationFailures: number;
}

function identity(d: RequestZoneDefinition | ConnectionZoneDefinition): string {
  return JSON.stringify([d.keyText, 'rate' in d ? d.rate : null, d.sizeBytes]);
}

export class LimitZones {
  private requestZones = new Map<string, { id: string; zone: RequestZone }>();
  private connectionZones = new Map<string, { id: string; zone: ConnectionZone }>();
  /** Counts configure() calls: what was bound to the zones before is bound again. */
  generation = 0;

  /** Takes a config's zones: unchanged ones are kept (with their state), others made empty. */
  configure(req: Iterable<RequestZoneDefinition>, conn: Iterable<ConnectionZoneDefinition>): void {
    const nextReq = new Map<string, { id: string; zone: RequestZone }>();
    for (const d of req) {
      const id = identity(d);
      const old = this.requestZones.get(d.name);
      nextReq.set(d.name, old !== undefined && old.id === id ? old : { id, zone: new RequestZone(d.name, d.rate, d.sizeBytes) });
    }
    const nextConn = new Map<string, { id: string; zone: ConnectionZone }>();
    for (const d of conn) {
      const id = identity(d);
      const old = this.connectionZones.get(d.name);
      // A connection zone's counts belong to requests in flight: a changed zone keeps counting
      // them in the old object (their holds release there), new requests count in the new one.
      nextConn.set(d.name, old !== undefined && old.id === id ? old : { id, zone: new ConnectionZone(d.name, d.sizeBytes) });
    }
    this.requestZones = nextReq;
    this.connectionZones = nextConn;
    this.generation++;
  }

  request(name: string): RequestZone | undefined {
    return this.requestZones.get(name)?.zone;
  }

  connection(name: string): ConnectionZone | undefined {
    return this.connectionZones.get(name)?.zone;
  }

  *figures(): Iterable<ZoneFigures> {
    for (const [name, { zone }] of this.requestZones) {
      yield { zone: name, type: 'req', keys: zone.size, evicted: zone.evicted, expired: zone.expired, allocationFailures: zone.allocationFailures };
    }
    for (const [name, { zone }] of this.connectionZones) {
      yield { zone: name, type: 'conn', keys: zone.size, evicted: 0, expired: 0, allocationFailures: zone.allocationFailures };
    }
  }
}
