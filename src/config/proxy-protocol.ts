/**
 * The PROXY protocol keys, checked on raw JSON (as cross-check.ts, so `check` reports them even
 * when another part of the file is wrong): `proxyProtocolFrom` lists (top level, per server, per
 * stream) are CIDRs; every `proxy_protocol` listen entry has a non-empty list that applies to it
 * (its server's or stream's own, else the top-level one): a proxy_protocol listener open to
 * everyone would let any client choose the address it is logged, balanced and forwarded as;
 * `proxy_protocol` is per address, like `ssl`: listed the same way by every server on it.
 * A server whose `realIp` (its own, else the top-level one) has "header": "proxy_protocol" needs
 * no proxyProtocolFrom: its `realIp.from` is the list (nginx set_real_ip_from). `realIp.from`
 * lists are CIDRs too.
 */
import { BlockList } from 'node:net';
import { formatHostPort } from '../nginx-language/address.js';
import { parseListen } from '../nginx-language/listen.js';
import { addCidrTo } from '../net/client-address.js';
import { formatPath } from './schema.js';

type Add = (path: PropertyKey[], message: string) => void;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The CIDRs of a `proxyProtocolFrom` that are valid, problems reported; undefined when the key is absent or not a list. */
function cidrList(v: unknown, at: PropertyKey[], add: Add): string[] | undefined {
  if (!Array.isArray(v)) return undefined;
  const scratch = new BlockList();
  const out: string[] = [];
  v.forEach((cidr: unknown, j: number) => {
    if (typeof cidr !== 'string') return;
    const err = addCidrTo(scratch, cidr);
    if (err !== null) add([...at, j], err);
    else out.push(cidr);
  });
  return out;
}

/** The CIDRs of a `realIp` that are valid (problems reported) when its header is "proxy_protocol", else undefined. */
function realIpList(v: unknown, at: PropertyKey[], add: Add): string[] | undefined {
  if (!isObject(v)) return undefined;
  const from = cidrList(v.from, [...at, 'from'], add);
  return v.header === 'proxy_protocol' ? from : undefined;
}

export function proxyProtocolProblems(raw: unknown, add: Add): void {
  if (!isObject(raw)) return;
  const topRealIp = realIpList(raw.realIp, ['realIp'], add);
  const top = cidrList(raw.proxyProtocolFrom, ['proxyProtocolFrom'], add);
  const first = new Map<string, { proxyProtocol: boolean; at: PropertyKey[] }>();
  const need = (at: PropertyKey[], own: string[] | undefined, where: string): void => {
    const list = own ?? top;
    if (list !== undefined && list.length > 0) return;
    add(at, `"proxy_protocol" needs the addresses allowed to send a PROXY header: give ${where} or the top level a "proxyProtocolFrom" `
      + 'list such as ["10.0.0.0/8"], or a "realIp" with "header": "proxy_protocol" and "from" '
      + '(a proxy_protocol listener open to everyone lets any client set its own address)');
  };
  if (Array.isArray(raw.servers)) {
    raw.servers.forEach((vs: unknown, i: number) => {
      if (!isObject(vs)) return;
      const ownFrom = cidrList(vs.proxyProtocolFrom, ['servers', i, 'proxyProtocolFrom'], add);
      const realIp = vs.realIp !== undefined ? realIpList(vs.realIp, ['servers', i, 'realIp'], add) : topRealIp;
      const own = ownFrom ?? (top === undefined || top.length === 0 ? realIp : undefined);
      if (!Array.isArray(vs.listen)) return;
      vs.listen.forEach((text: unknown, j: number) => {
        const e = typeof text === 'string' ? parseListen(text) : null;
        if (e === null || typeof e === 'string') return;
        const at = ['servers', i, 'listen', j];
        const key = formatHostPort(e.host, e.port);
        const seen = first.get(key);
        if (seen === undefined) first.set(key, { proxyProtocol: e.proxyProtocol, at });
        else if (seen.proxyProtocol !== e.proxyProtocol) {
          add(at, `${key} is listed ${e.proxyProtocol ? 'with' : 'without'} "proxy_protocol" here but ${seen.proxyProtocol ? 'with' : 'without'} it in `
            + `${formatPath(seen.at)}; proxy_protocol applies to an address: list it the same way in every server`);
        }
        if (e.proxyProtocol) need(at, own, `$.servers[${i}]`);
      });
    });
  }
  if (Array.isArray(raw.streams)) {
    raw.streams.forEach((st: unknown, i: number) => {
      if (!isObject(st)) return;
      const own = cidrList(st.proxyProtocolFrom, ['streams', i, 'proxyProtocolFrom'], add);
      if (!Array.isArray(st.listen)) return;
      st.listen.forEach((text: unknown, j: number) => {
        const e = typeof text === 'string' ? parseListen(text) : null;
        if (e !== null && typeof e !== 'string' && e.proxyProtocol) need(['streams', i, 'listen', j], own, `$.streams[${i}]`);
      });
    });
  }
}
