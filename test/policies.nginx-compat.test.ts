/**
 * Bit-for-bit compatibility with nginx: key -> server mappings captured from nginx 1.22.1
 * (`hash $arg_k [consistent]`, `ip_hash`) for the upstream
 *   server 127.0.0.1:28081 weight=2; server 127.0.0.1:28082; server 127.0.0.1:28083; server 127.0.0.1:28084 weight=3;
 * ("md"/"cd": the same with 127.0.0.1:28082 marked `down`). Each vector is KEY=N, meaning
 * nginx sent `?k=encodeURIComponent(KEY)` to 127.0.0.1:2808N (for ip_hash: the client
 * address). Users migrating from nginx keep their key -> server mapping (and caches).
 */
import { describe, expect, it } from 'vitest';
import { Upstream } from '../src/balancer/upstream.js';
import type { PickRequest } from '../src/balancer/policy.js';
import { crc32 } from '../src/balancer/hash.js';
import { loadConfig } from '../src/config/load.js';
import { type UpstreamConfig } from '../src/config/model.js';

const VECTORS: Record<string, string> = {
  c: '43162898=1 56502658=4 134586765=2 147926525=4 212670872=4 226010632=4 304094739=4 317434499=3 395518606=3 408858366=1 486942473=4 500282233=1 sess0=1 sess3=4 sess6=3 sess9=1 sess12=1 sess15=4 sess18=3 sess21=1 sess24=2 sess27=2 sess30=3 sess33=3 PHPSESSID-2-é=1 PHPSESSID-5-é=4 PHPSESSID-8-é=1 PHPSESSID-11-é=1 PHPSESSID-14-é=4 PHPSESSID-17-é=3 PHPSESSID-20-é=2 PHPSESSID-23-é=2 PHPSESSID-26-é=4 PHPSESSID-29-é=1 PHPSESSID-32-é=4 PHPSESSID-35-é=1',
  m: '43162898=1 56502658=4 134586765=2 147926525=1 212670872=2 226010632=1 304094739=4 317434499=3 395518606=1 408858366=2 486942473=1 500282233=2 sess0=2 sess3=4 sess6=1 sess9=2 sess12=4 sess15=4 sess18=1 sess21=4 sess24=4 sess27=3 sess30=1 sess33=4 PHPSESSID-2-é=1 PHPSESSID-5-é=1 PHPSESSID-8-é=4 PHPSESSID-11-é=1 PHPSESSID-14-é=3 PHPSESSID-17-é=3 PHPSESSID-20-é=4 PHPSESSID-23-é=4 PHPSESSID-26-é=4 PHPSESSID-29-é=1 PHPSESSID-32-é=4 PHPSESSID-35-é=1',
  md: '43162898=1 56502658=4 134586765=4 147926525=1 212670872=4 226010632=1 304094739=4 317434499=3 395518606=1 408858366=4 486942473=1 500282233=1 sess0=4 sess3=4 sess6=1 sess9=4 sess12=4 sess15=4 sess18=1 sess21=4 sess24=4 sess27=3 sess30=1 sess33=4 PHPSESSID-2-é=1 PHPSESSID-5-é=1 PHPSESSID-8-é=4 PHPSESSID-11-é=1 PHPSESSID-14-é=3 PHPSESSID-17-é=3 PHPSESSID-20-é=4 PHPSESSID-23-é=4 PHPSESSID-26-é=4 PHPSESSID-29-é=1 PHPSESSID-32-é=4 PHPSESSID-35-é=1',
  cd: '43162898=1 56502658=4 134586765=4 147926525=4 212670872=4 226010632=4 304094739=4 317434499=3 395518606=3 408858366=1 486942473=4 500282233=1 sess0=1 sess3=4 sess6=3 sess9=1 sess12=1 sess15=4 sess18=3 sess21=1 sess24=1 sess27=1 sess30=3 sess33=3 PHPSESSID-2-é=1 PHPSESSID-5-é=4 PHPSESSID-8-é=1 PHPSESSID-11-é=1 PHPSESSID-14-é=4 PHPSESSID-17-é=3 PHPSESSID-20-é=4 PHPSESSID-23-é=1 PHPSESSID-26-é=4 PHPSESSID-29-é=1 PHPSESSID-32-é=4 PHPSESSID-35-é=1',
  i: '127.0.3.1=4 127.37.94.2=1 127.74.185.3=3 127.111.20.4=1 127.148.111.5=4 127.185.202.6=1 127.222.37.7=4 127.3.128.8=4 127.40.219.9=2 127.77.54.10=1 127.114.145.11=3 127.151.236.12=4 127.188.71.13=4 127.225.162.14=1 127.6.253.15=1 127.43.88.16=1 127.80.179.17=3 127.117.14.18=1 127.154.105.19=4 127.191.196.20=1 127.228.31.21=4 127.9.122.22=4 127.46.213.23=2 127.83.48.24=1 127.120.139.25=3 127.157.230.26=4 127.194.65.27=4 127.231.156.28=1 127.12.247.29=1 127.49.82.30=1 127.86.173.31=3 127.123.8.32=1 127.160.99.33=4 127.197.190.34=1 127.234.25.35=4 127.15.116.36=4 127.52.207.37=2 127.89.42.38=1 127.126.133.39=3 127.163.224.40=4',
};

async function upstream(balance: unknown, down: boolean): Promise<Upstream> {
  const config = await loadConfig({
    servers: [{ listen: ['127.0.0.1:1'], locations: [{ path: '/', proxyPass: 'http://u' }] }],
    upstreams: {
      u: {
        balance,
        servers: [
          { address: '127.0.0.1:28081', weight: 2 }, { address: '127.0.0.1:28082', down },
          { address: '127.0.0.1:28083' }, { address: '127.0.0.1:28084', weight: 3 },
        ],
      },
    },
  });
  return new Upstream(config.upstreams.get('u') as UpstreamConfig);
}

function vectors(name: string): Array<[string, number]> {
  return VECTORS[name]!.split(' ').map((v) => {
    const eq = v.lastIndexOf('=');
    return [v.slice(0, eq), 28080 + Number(v.slice(eq + 1))];
  });
}

function pickPort(up: Upstream, url: string, remoteAddress = '127.0.0.1'): number {
  const r = { req: { url, headers: {} }, remoteAddress } as unknown as PickRequest;
  const p = up.select(r, null, 1_000_000)!;
  up.release(p, false, 1_000_000);
  return p.port;
}

describe('same servers as nginx 1.22.1', () => {
  it('crc32 is the standard CRC-32 nginx uses', () => {
    expect(crc32('123456789')).toBe(0xcbf43926);
    expect(crc32('')).toBe(0);
  });

  it.each([
    ['c', { hash: '$arg_k', consistent: true }, false],
    ['m', { hash: '$arg_k' }, false],
    ['cd', { hash: '$arg_k', consistent: true }, true],
    ['md', { hash: '$arg_k' }, true],
  ])('%s: %j', async (name, balance, down) => {
    const up = await upstream(balance, down);
    const list = vectors(name);
    expect(list.length).toBeGreaterThan(30);
    const got = list.map(([key]) => `${key}=${pickPort(up, `/?k=${encodeURIComponent(key)}`)}`);
    expect(got).toEqual(list.map(([key, port]) => `${key}=${port}`));
  });

  it('ip_hash', async () => {
    const up = await upstream('ip_hash', false);
    const list = vectors('i');
    const got = list.map(([ip]) => `${ip}=${pickPort(up, '/', ip)}`);
    expect(got).toEqual(list.map(([ip, port]) => `${ip}=${port}`));
  });
});
