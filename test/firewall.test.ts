/**
 * `sessionlb firewall`: the memcached host firewall generated from a config. The IPv4 MEMC rules
 * for the reference addresses must be exactly the reference memcached-firewall.sh's; IPv6 sources
 * go to ip6tables; sources are canonical, deduplicated and sorted; the output is deterministic.
 * The three formats are checked with the real tools' test modes only (iptables-restore --test,
 * ip6tables-restore --test, nft -c): nothing here changes the host's rules.
 */
import { describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/config/load.js';
import { importNginx } from '../src/tools/import-nginx/import-nginx.js';
import {
  canonicalSource, firewallNftables, firewallOutput, firewallPlan, firewallRestore, firewallScript, type FirewallPlan,
} from '../src/tools/firewall.js';
import { CLI, runCli, writeConfig } from './helpers/child.js';

/** The reference setup users migrate from (examples/: nginx.conf, memcached-firewall.sh). */
const REFERENCE_DIR = fileURLToPath(new URL('../examples', import.meta.url));
const referenceRules = commands(readFileSync(`${REFERENCE_DIR}/memcached-firewall.sh`, 'utf8'));
/** The reference's MEMC rules without the command name (`-A MEMC -s 127.0.0.1 -j RETURN`, ...). */
const referenceMemc = referenceRules.filter((l) => l.startsWith('iptables -A MEMC ')).map((l) => l.slice('iptables '.length));
/** The reference's INPUT rule, without `iptables -A INPUT `. */
const referenceJump = referenceRules.find((l) => l.startsWith('iptables -A INPUT '))!.slice('iptables -A INPUT '.length);

/** The command lines of a script or rules file (no comments, no blank lines). */
function commands(script: string): string[] {
  return script.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
}

function family(script: string, cmd: 'iptables' | 'ip6tables'): string[] {
  return commands(script).filter((l) => l.startsWith(`${cmd} `));
}

/** The guarded INPUT jump commands a restore file's header gives, without the leading `#   `. */
function hookCommands(rules: string): string[] {
  return rules.split('\n').filter((l) => /^#\s+ip6?tables -C INPUT /.test(l)).map((l) => l.replace(/^#\s+/, ''));
}

/** The reference nginx.conf converted, plus the reference memcached (memcached.sysconfig: -l 192.168.1.5, port 11211). */
function referenceRaw(): Record<string, unknown> {
  const { config } = importNginx(readFileSync(`${REFERENCE_DIR}/nginx.conf`, 'utf8'), 'nginx.conf');
  return { ...config, sessionStore: { type: 'memcached', servers: ['192.168.1.5:11211'] } };
}

async function plan(raw: unknown, options: Parameters<typeof firewallPlan>[1] = {}): Promise<FirewallPlan> {
  return firewallPlan(await loadConfig(raw, 'test.json'), { source: 'test.json', ...options });
}

async function script(raw: unknown, options: Parameters<typeof firewallPlan>[1] = {}): Promise<string> {
  return firewallScript(await plan(raw, options));
}

async function restore(raw: unknown, fam: 4 | 6, options: Parameters<typeof firewallPlan>[1] = {}): Promise<string> {
  return firewallRestore(await plan(raw, options), fam);
}

function upstreamConfig(addresses: string[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    servers: [{ listen: ['80'], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
    upstreams: { backend: { servers: addresses.map((address) => ({ address })) } },
    ...extra,
  };
}

/** A restore file's body: `*filter`, the MEMC declaration, these rules, `COMMIT`. */
function restoreBody(memc: string[]): string[] {
  return ['*filter', ':MEMC - [0:0]', ...memc, 'COMMIT'];
}

/** Configs covering both families, CIDRs, several ports and a web-server-less family. */
async function samplePlans(): Promise<FirewallPlan[]> {
  return [
    await plan(referenceRaw(), { balancers: ['192.168.1.10'] }),
    await plan(referenceRaw()),
    await plan(upstreamConfig(['[2001:db8::1]:80', '[::ffff:10.0.0.9]:80', '10.0.0.2:80', '[2001:db8::a]:80'], {
      servers: [{ listen: ['[2001:db8::99]:80', '0.0.0.0:81'], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      sessionStore: { type: 'memcached', servers: ['10.0.0.5:11212', '10.0.0.6', '10.0.0.7:11213'] },
    }), { balancers: ['2001:db8:0::b', '10.1.0.0/24', '2001:db8:1::/48'] }),
    await plan(upstreamConfig(['10.0.0.1:80']), { port: 11311 }),
  ];
}

describe('firewall rules', () => {
  it('for the reference setup: exactly the reference script\'s MEMC rules, in every format', async () => {
    const v4 = await restore(referenceRaw(), 4);
    expect(commands(v4)).toEqual(restoreBody(referenceMemc));
    // The INPUT jump is the reference's, added only when -C does not find it.
    expect(hookCommands(v4)).toEqual([`iptables -C INPUT ${referenceJump} 2>/dev/null || iptables -I INPUT ${referenceJump}`]);
    // IPv6 gets the same policy (only ::1, then REJECT) so memcached is not open over IPv6.
    expect(commands(await restore(referenceRaw(), 6))).toEqual(restoreBody([
      '-A MEMC -s ::1 -j RETURN',
      '-A MEMC -j REJECT --reject-with icmp6-adm-prohibited',
    ]));
    expect(v4.startsWith('# memcached firewall (IPv4, for iptables-restore) generated by "sessionlb firewall" from test.json.\n')).toBe(true);
    expect(v4).toContain('(sessionStore.servers: 192.168.1.5:11211)');
    // The balancer listens on a wildcard: its own address is unknown and the rules say so.
    expect(v4).toMatch(/# WARNING: this balancer's own address is not in the config.*--balancer ADDR/);

    const sh = await script(referenceRaw());
    expect(family(sh, 'iptables').filter((l) => l.startsWith('iptables -A '))).toEqual(referenceMemc.map((l) => `iptables ${l}`));
    expect(family(sh, 'ip6tables')).toEqual([
      'ip6tables -N MEMC 2>/dev/null || ip6tables -F MEMC',
      'ip6tables -A MEMC -s ::1 -j RETURN',
      'ip6tables -A MEMC -j REJECT --reject-with icmp6-adm-prohibited',
      `ip6tables -C INPUT ${referenceJump} 2>/dev/null || ip6tables -I INPUT ${referenceJump}`,
    ]);
    expect(sh.startsWith('#!/bin/sh\n# memcached firewall generated by "sessionlb firewall" from test.json.\n')).toBe(true);
    expect(sh).toMatch(/# WARNING: this balancer's own address/);

    const nft = firewallNftables(await plan(referenceRaw()));
    expect(commands(nft).filter((l) => / saddr /.test(l))).toEqual([
      'ip saddr 127.0.0.1 accept', 'ip6 saddr ::1 accept',
      ...referenceMemc.filter((l) => l.includes(' -s ') && !l.includes('127.0.0.1')).map((l) => `ip saddr ${l.split(' ')[3]} accept`),
    ]);
    expect(nft).toContain('\t\ttcp dport 11211 jump memcached\n');
    expect(nft).toMatch(/# WARNING: this balancer's own address/);
  });

  it('without sessionStore.servers uses --port (default 11211)', async () => {
    const { sessionStore: _ignored, ...raw } = referenceRaw();
    expect(commands(await restore(raw, 4))).toEqual(restoreBody(referenceMemc));
    expect(hookCommands(await restore(raw, 4))[0]).toContain(`-I INPUT ${referenceJump}`);
    const other = await restore(raw, 4, { port: 11311 });
    expect(hookCommands(other)).toEqual(['iptables -C INPUT -p tcp -m tcp --dport 11311 -j MEMC 2>/dev/null || iptables -I INPUT -p tcp -m tcp --dport 11311 -j MEMC']);
    expect(commands(other)).toEqual(restoreBody(referenceMemc));
    expect(family(await script(raw, { port: 11311 }), 'iptables').at(-1)).toBe('iptables -C INPUT -p tcp -m tcp --dport 11311 -j MEMC 2>/dev/null || iptables -I INPUT -p tcp -m tcp --dport 11311 -j MEMC');
  });

  it('takes the ports from sessionStore.servers (sorted, once each) and says --port is ignored', async () => {
    const raw = upstreamConfig(['10.0.0.1:80'], { sessionStore: { type: 'memcached', servers: ['10.0.0.5:11212', '10.0.0.6', '10.0.0.7:11212'] } });
    const p = firewallPlan(await loadConfig(raw), { port: 9999, balancers: ['10.0.0.100'] });
    expect(p.ports).toEqual([11211, 11212]);
    expect(p.warnings).toEqual(['--port 9999 is ignored: the ports come from sessionStore.servers (10.0.0.5:11212, 10.0.0.6:11211, 10.0.0.7:11212)']);
    const jump = (port: number): string => `-p tcp -m tcp --dport ${port} -j MEMC`;
    expect(hookCommands(firewallRestore(p, 6))).toEqual([11211, 11212].map((port) => `ip6tables -C INPUT ${jump(port)} 2>/dev/null || ip6tables -I INPUT ${jump(port)}`));
    expect(family(firewallScript(p), 'iptables').slice(-2)).toEqual([11211, 11212].map((port) => `iptables -C INPUT ${jump(port)} 2>/dev/null || iptables -I INPUT ${jump(port)}`));
    expect(commands(firewallNftables(p)).filter((l) => l.startsWith('tcp dport'))).toEqual(['tcp dport 11211 jump memcached', 'tcp dport 11212 jump memcached']);
    expect(firewallRestore(p, 4)).toContain('# WARNING: --port 9999 is ignored');
  });

  it('puts IPv6 sources in ip6tables, in canonical form, and IPv4-mapped ones in iptables', async () => {
    const raw = upstreamConfig(['[2001:db8::1]:80', '[2001:DB8:0:0::1]:81', '[::ffff:10.0.0.9]:80', '10.0.0.2:80', '[2001:db8::a]:80'], {
      servers: [{ listen: ['[2001:db8::99]:80', '0.0.0.0:81', '[::]:82'], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
    });
    const options = { balancers: ['2001:db8:0::b', '10.1.0.0/24'] };
    const v4 = [
      '-A MEMC -s 127.0.0.1 -j RETURN',
      '-A MEMC -s 10.1.0.0/24 -j RETURN',
      '-A MEMC -s 10.0.0.2 -j RETURN',
      '-A MEMC -s 10.0.0.9 -j RETURN',
      '-A MEMC -j REJECT --reject-with icmp-host-prohibited',
    ];
    const v6 = [
      '-A MEMC -s ::1 -j RETURN',
      // balancers: --balancer and the specific listen address (wildcards [::] and 0.0.0.0 are not hosts)
      '-A MEMC -s 2001:db8::b -j RETURN',
      '-A MEMC -s 2001:db8::99 -j RETURN',
      // web servers, numerically sorted; 2001:db8::1 written twice in different forms appears once
      '-A MEMC -s 2001:db8::1 -j RETURN',
      '-A MEMC -s 2001:db8::a -j RETURN',
      '-A MEMC -j REJECT --reject-with icmp6-adm-prohibited',
    ];
    expect(commands(await restore(raw, 4, options))).toEqual(restoreBody(v4));
    expect(commands(await restore(raw, 6, options))).toEqual(restoreBody(v6));
    const sh = await script(raw, options);
    expect(family(sh, 'iptables').filter((l) => l.startsWith('iptables -A '))).toEqual(v4.map((l) => `iptables ${l}`));
    expect(family(sh, 'ip6tables').filter((l) => l.startsWith('ip6tables -A '))).toEqual(v6.map((l) => `ip6tables ${l}`));
    // nftables: one chain for both families; per group, IPv4 then IPv6, in the same order.
    expect(commands(firewallNftables(await plan(raw, options))).filter((l) => / saddr /.test(l))).toEqual([
      'ip saddr 127.0.0.1 accept', 'ip6 saddr ::1 accept',
      'ip saddr 10.1.0.0/24 accept', 'ip6 saddr 2001:db8::b accept', 'ip6 saddr 2001:db8::99 accept',
      'ip saddr 10.0.0.2 accept', 'ip saddr 10.0.0.9 accept', 'ip6 saddr 2001:db8::1 accept', 'ip6 saddr 2001:db8::a accept',
    ]);
    expect(sh).not.toContain('WARNING');
  });

  it('deduplicates across upstreams, balancers and loopback, sorts numerically, and is deterministic', async () => {
    const raw = {
      servers: [{ listen: ['10.0.0.10:80'], locations: [{ path: '/', proxyPass: 'http://a' }, { path: '/b', proxyPass: 'http://b' }, { path: '/c', proxyPass: 'http://10.0.0.3:9000' }] }],
      upstreams: {
        a: { servers: [{ address: '10.0.0.9:80' }, { address: '10.0.0.10:8080' }, { address: '127.0.0.1:8000' }, { address: '10.0.0.9:81' }] },
        b: { servers: [{ address: '10.0.0.9:80' }, { address: '10.0.0.3:80' }] },
      },
      admin: { listen: '10.0.0.10:9100' },
    };
    const balancers = ['10.0.0.10', '10.0.0.11', '10.0.0.11/32'];
    const out = await restore(raw, 4, { balancers });
    expect(commands(out).filter((l) => l.includes(' -s '))).toEqual([
      '-A MEMC -s 127.0.0.1 -j RETURN',
      '-A MEMC -s 10.0.0.10 -j RETURN',
      '-A MEMC -s 10.0.0.11 -j RETURN',
      '-A MEMC -s 10.0.0.3 -j RETURN',
      '-A MEMC -s 10.0.0.9 -j RETURN',
    ]);
    // The same config with every list reversed gives the same bytes, in every format.
    const reversed = {
      ...raw,
      upstreams: { b: { servers: [...raw.upstreams.b.servers].reverse() }, a: { servers: [...raw.upstreams.a.servers].reverse() } },
    };
    const a = await plan(raw, { balancers });
    const b = await plan(reversed, { balancers: [...balancers].reverse() });
    for (const format of ['iptables-restore', 'nftables', 'script'] as const) {
      for (const fam of [4, 6] as const) expect(firewallOutput(b, format, fam)).toBe(firewallOutput(a, format, fam));
    }
    expect(firewallOutput(a, 'iptables-restore')).toBe(out);
    // A shell can parse the script (it is never run here).
    execFileSync('sh', ['-n'], { input: firewallScript(a) });
  });

  it('accepts only addresses and CIDRs as --balancer (nothing else reaches the rules text)', async () => {
    const config = await loadConfig(upstreamConfig(['10.0.0.1:80']));
    for (const bad of ['lb1.example.com', '10.0.0.1; reboot', '10.0.0.0/33', '$(id)', '']) {
      expect(() => firewallPlan(config, { balancers: [bad] }), bad).toThrow(/is not an IP address or CIDR/);
    }
    expect(canonicalSource('[2001:0db8::0001]')).toEqual({ address: '2001:db8::1', family: 6 });
    expect(canonicalSource('10.0.0.1/32')).toEqual({ address: '10.0.0.1', family: 4 });
    expect(canonicalSource('2001:db8::/32')).toEqual({ address: '2001:db8::/32', family: 6 });
  });

  it('keeps a file name with control characters on its comment line', async () => {
    const p = await plan(referenceRaw(), { source: 'evil\nCOMMIT\n*filter\r.json' });
    for (const fam of [4, 6] as const) expect(commands(firewallRestore(p, fam))).toEqual(commands(firewallRestore(await plan(referenceRaw()), fam)));
    expect(firewallNftables(p)).toContain('from evil?COMMIT?*filter?.json.\n');
  });
});

describe('the script form can be run again (checked by its structure; never run here)', () => {
  it('creates or empties MEMC, refills it, then adds each INPUT jump only when -C does not find it', async () => {
    for (const p of await samplePlans()) {
      const sh = firewallScript(p);
      const lines = commands(sh);
      expect(lines[0]).toBe('set -e');
      for (const cmd of ['iptables', 'ip6tables'] as const) {
        const own = family(sh, cmd);
        // First the chain: created, or emptied when it exists (a bare -N fails the second time).
        expect(own[0]).toBe(`${cmd} -N MEMC 2>/dev/null || ${cmd} -F MEMC`);
        const memc = own.filter((l) => l.startsWith(`${cmd} -A MEMC `));
        const jumps = own.slice(1 + memc.length);
        expect(own.slice(1, 1 + memc.length)).toEqual(memc);
        expect(memc.at(-1)).toMatch(/ -j REJECT --reject-with /);
        // Then the INPUT jumps, each guarded by -C with the very same rule.
        expect(jumps).toHaveLength(p.ports.length);
        jumps.forEach((l, i) => {
          const spec = `-p tcp -m tcp --dport ${p.ports[i]} -j MEMC`;
          expect(l).toBe(`${cmd} -C INPUT ${spec} 2>/dev/null || ${cmd} -I INPUT ${spec}`);
        });
      }
      // Nothing else: no bare -N, no -A/-I INPUT without its -C, no other command.
      expect(lines.filter((l) => l !== 'set -e' && !l.startsWith('iptables ') && !l.startsWith('ip6tables '))).toEqual([]);
      expect(lines.filter((l) => /(^|\|\| )ip6?tables -[AI] INPUT /.test(l) && !/ -C INPUT /.test(l))).toEqual([]);
      execFileSync('sh', ['-n'], { input: sh });
    }
  });
});

/** A binary in PATH or the sbin directories (where Debian puts iptables and nft), or null. */
function findTool(name: string): string | null {
  for (const dir of [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin']) {
    if (dir !== '' && existsSync(join(dir, name))) return join(dir, name);
  }
  return null;
}

/** Runs a tool (in a test mode), feeding `input` on stdin; its exit status and stderr. */
function run(file: string, args: string[], input = ''): { status: number | null; stderr: string } {
  const r = spawnSync(file, args, { input, encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, stderr: `${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}

/** The restore file with the header's INPUT jumps added as rules before COMMIT (to check their syntax too). */
function withHooks(rules: string): string {
  const hooks = hookCommands(rules).map((c) => c.slice(c.indexOf('|| ') + 3).replace(/^ip6?tables /, ''));
  return rules.replace(/^COMMIT$/m, [...hooks, 'COMMIT'].join('\n'));
}

const IPTABLES_RESTORE = findTool('iptables-restore');
const IP6TABLES_RESTORE = findTool('ip6tables-restore');
const NFT = findTool('nft');
const missing = (tool: string): string => ` (SKIPPED: ${tool} is not installed; .ci/run installs it)`;

describe('the real tools accept the rules (test modes only: --test, nft -c)', () => {
  it.skipIf(IPTABLES_RESTORE === null || IP6TABLES_RESTORE === null)(
    `iptables-restore --test and ip6tables-restore --test accept the two families' files${IPTABLES_RESTORE === null || IP6TABLES_RESTORE === null ? missing('iptables') : ''}`,
    async () => {
      for (const p of await samplePlans()) {
        for (const [fam, tool] of [[4, IPTABLES_RESTORE!], [6, IP6TABLES_RESTORE!]] as const) {
          const rules = firewallRestore(p, fam);
          expect(run(tool, ['--test', '--noflush'], rules), `${tool}\n${rules}`).toEqual({ status: 0, stderr: '' });
          expect(run(tool, ['--test', '--noflush'], withHooks(rules)), `${tool} with the INPUT jumps\n${withHooks(rules)}`).toEqual({ status: 0, stderr: '' });
        }
        // The check means something: each family's file is refused by the other family's tool.
        expect(run(IP6TABLES_RESTORE!, ['--test', '--noflush'], firewallRestore(p, 4)).status).not.toBe(0);
      }
      // And the script's rules are the same rules: fed through iptables-restore --test as well.
      for (const p of await samplePlans()) {
        for (const [cmd, tool] of [['iptables', IPTABLES_RESTORE!], ['ip6tables', IP6TABLES_RESTORE!]] as const) {
          const memc = family(firewallScript(p), cmd).filter((l) => l.startsWith(`${cmd} -A MEMC `)).map((l) => l.slice(cmd.length + 1));
          expect(run(tool, ['--test', '--noflush'], `${restoreBody(memc).join('\n')}\n`).status).toBe(0);
        }
      }
    },
  );

  it.skipIf(NFT === null)(`nft -c -f accepts the nftables file, also loaded twice in one go${NFT === null ? missing('nft') : ''}`, async () => {
    for (const p of await samplePlans()) {
      const text = firewallNftables(p);
      expect(text.startsWith('#!/usr/sbin/nft -f\n')).toBe(true);
      const file = writeConfig(text, 'memcached.nft');
      expect(run(NFT!, ['-c', '-f', file]), text).toEqual({ status: 0, stderr: '' });
      // Twice in one transaction: the second copy finds the table the first one made and replaces it.
      const twice = writeConfig(`${text}${text}`, 'twice.nft');
      expect(run(NFT!, ['-c', '-f', twice])).toEqual({ status: 0, stderr: '' });
    }
    // The check asks the kernel: without the empty declaration first, deleting the missing table is refused.
    const noDeclaration = firewallNftables((await samplePlans())[0]!).replace(/^table .* \{\}\n/m, '');
    expect(run(NFT!, ['-c', '-f', writeConfig(noDeclaration, 'bad.nft')]).stderr).toMatch(/delete table inet sessionlb_memcached/);
  });

  // iptables-restore of the nf_tables backend (Debian's default) only parses in --test mode; the
  // legacy one also checks the rules with the kernel (e.g. that MEMC exists before INPUT jumps to
  // it). It would create the legacy tables, so it runs in a new, empty network namespace.
  const LEGACY = findTool('iptables-legacy-restore');
  const LEGACY6 = findTool('ip6tables-legacy-restore');
  const UNSHARE = findTool('unshare');
  const netns = LEGACY !== null && LEGACY6 !== null && UNSHARE !== null && run(UNSHARE, ['--net', 'true']).status === 0;
  it.skipIf(!netns)(
    `iptables-legacy-restore --test accepts them too, in a private network namespace${netns ? '' : ' (SKIPPED: needs iptables-legacy-restore and unshare --net, i.e. root)'}`,
    async () => {
      for (const p of await samplePlans()) {
        for (const [fam, tool] of [[4, LEGACY!], [6, LEGACY6!]] as const) {
          const rules = withHooks(firewallRestore(p, fam));
          expect(run(UNSHARE!, ['--net', tool, '--test', '--noflush'], rules), rules).toEqual({ status: 0, stderr: '' });
        }
      }
      // It does check the jumps: without the MEMC declaration the INPUT jump is refused.
      const undeclared = withHooks(firewallRestore((await samplePlans())[0]!, 4)).replace(/^:MEMC .*\n/m, '').replace(/^-A MEMC .*\n/gm, '');
      expect(run(UNSHARE!, ['--net', LEGACY!, '--test', '--noflush'], undeclared).status).not.toBe(0);
    },
  );
});

describe('sessionlb firewall (CLI, child process)', () => {
  it('prints the iptables-restore file by default, the other formats on request, and rejects bad options', async () => {
    if (!existsSync(CLI)) execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: fileURLToPath(new URL('..', import.meta.url)) });
    const file = writeConfig(referenceRaw());
    const withBalancer = [...referenceMemc.slice(0, 1), '-A MEMC -s 192.168.1.10 -j RETURN', ...referenceMemc.slice(1)];
    const ok = await runCli(['firewall', '--config', file, '--balancer', '192.168.1.10']);
    expect(ok.code).toBe(0);
    expect(commands(ok.stdout)).toEqual(restoreBody(withBalancer));
    // Without --family: a reminder of the INPUT jump and of the IPv6 file.
    expect(ok.stderr).toMatch(/^sessionlb: note: this is the IPv4 file; .*--family 6/);

    const v6 = await runCli(['firewall', '--config', file, '--balancer', '192.168.1.10', '--family', '6']);
    expect(v6.code).toBe(0);
    expect(v6.stderr).toBe('');
    expect(commands(v6.stdout)).toEqual(restoreBody(['-A MEMC -s ::1 -j RETURN', '-A MEMC -j REJECT --reject-with icmp6-adm-prohibited']));
    const v4 = await runCli(['firewall', '--config', file, '--balancer', '192.168.1.10', '--family=4', '--format=iptables-restore']);
    expect(v4).toMatchObject({ code: 0, stderr: '', stdout: ok.stdout });

    const p = firewallPlan(await loadConfig(referenceRaw(), file), { balancers: ['192.168.1.10'], source: file });
    const sh = await runCli(['firewall', '--config', file, '--balancer', '192.168.1.10', '--format', 'script']);
    expect(sh).toMatchObject({ code: 0, stderr: '', stdout: firewallScript(p) });
    const nft = await runCli(['firewall', '--config', file, '--balancer', '192.168.1.10', '--format', 'nftables']);
    expect(nft).toMatchObject({ code: 0, stderr: '', stdout: firewallNftables(p) });

    const warned = await runCli(['firewall', '--config', file, '--family', '4']);
    expect(warned.code).toBe(0);
    expect(commands(warned.stdout)).toEqual(restoreBody(referenceMemc));
    expect(warned.stderr).toMatch(/^sessionlb: warning: this balancer's own address is not in the config/);

    for (const [args, message] of [
      [['--balancer', 'lb1.example.com'], '--balancer "lb1.example.com" is not an IP address or CIDR'],
      [['--format', 'ufw'], 'unknown --format "ufw" (expected iptables-restore, nftables, script)'],
      [['--format', 'nftables', '--family', '6'], '--family applies to --format iptables-restore only'],
      [['--family', 'inet6'], '--family must be 4 or 6, not "inet6"'],
    ] as const) {
      const bad = await runCli(['firewall', '--config', file, ...args]);
      expect(bad.code, args.join(' ')).toBe(2);
      expect(bad.stdout).toBe('');
      expect(bad.stderr).toContain(message);
    }

    // Pure text generation: the module never starts a process.
    expect(readFileSync(fileURLToPath(new URL('../src/tools/firewall.ts', import.meta.url)), 'utf8')).not.toMatch(/child_process|spawn\(|execFile|execSync/);
  });
});
