/**
 * `npm run bench`: drives the upstream route of every server under test with signed CloudEvents
 * over loopback (autocannon, keep-alive, 50 connections), in interleaved rounds after a warm-up,
 * and reports medians, ratios, the server's CPU time per request and its memory.
 *
 *   node bench/dist/run.js            full run (about 12 minutes)
 *   node bench/dist/run.js --quick    short rounds, a smoke run
 *   node bench/dist/run.js --profile  CPU profile of the module's text path on each adapter
 *     (--profile --servers=nest-fastify,node-http profiles other servers, for comparison)
 *   node bench/dist/run.js --from=bench/results/latest.json   render a recorded run's report again
 *   add --pin to pin the server to CPU 1 and the load generator to CPU 0 (taskset)
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import autocannon, { type AutocannonResult } from 'autocannon';
import {
  comparisonMarkdown,
  profileMarkdown,
  summarizeCpuProfile,
  type ProfileSummary,
} from './cpu-profile.js';
import type { ChildReport, ChildRequest } from './server-child.js';
import { SERVERS, type ServerName, type ServerSpec } from './servers.js';
import { WORKLOADS, type Workload, type WorkloadName } from './workloads.js';

interface Settings {
  mode: 'full' | 'quick';
  rounds: number;
  /** Seconds of load before the first measurement of a server on a workload. */
  firstWarmupSeconds: number;
  /** Seconds of load before later rounds' measurements (the process is warm already). */
  rewarmSeconds: number;
  measureSeconds: number;
  connections: number;
  leakRequests: number;
  /** A leak run that has not finished by then is stopped and reported as incomplete. */
  leakTimeLimitSeconds: number;
  profileSeconds: number;
}

const FULL: Settings = {
  mode: 'full',
  rounds: 3,
  firstWarmupSeconds: 5,
  rewarmSeconds: 2,
  measureSeconds: 5,
  connections: 50,
  leakRequests: 200_000,
  leakTimeLimitSeconds: 150,
  profileSeconds: 10,
};
const QUICK: Settings = {
  ...FULL,
  mode: 'quick',
  rounds: 1,
  firstWarmupSeconds: 1,
  rewarmSeconds: 1,
  measureSeconds: 2,
  leakRequests: 20_000,
  leakTimeLimitSeconds: 30,
  profileSeconds: 3,
};

const args = new Set(process.argv.slice(2));
const option = (name: string) =>
  process.argv.find((arg) => arg.startsWith(`--${name}=`))?.slice(name.length + 3);
// Replaced by the recorded settings when a report is rendered again from its JSON (--from=).
let settings = args.has('--quick') ? QUICK : FULL;
const pin = args.has('--pin');
const resultsDir = fileURLToPath(new URL('../results/', import.meta.url));
const childScript = fileURLToPath(new URL('./server-child.js', import.meta.url));
const MiB = 1024 * 1024;

const log = (line: string) => console.log(line);

// ---------------------------------------------------------------------------------------------
// The server child process

class ServerProcess {
  readonly port: Promise<number>;
  private readonly child: ChildProcess;
  private nextId = 0;
  private readonly pending = new Map<number, (report: ChildReport & { type: 'usage' }) => void>();

  constructor(
    readonly spec: ServerSpec,
    nodeFlags: string[] = [],
  ) {
    const command = [process.execPath, '--expose-gc', ...nodeFlags, childScript, spec.name];
    const [file, ...rest] = pin ? ['taskset', '-c', '1', ...command] : command;
    this.child = spawn(file!, rest, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.port = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${spec.name} did not start`)), 30_000);
      this.child.once('exit', (code) => reject(new Error(`${spec.name} exited with ${code}`)));
      this.child.on('message', (report: ChildReport) => {
        if (report.type === 'ready') {
          clearTimeout(timer);
          resolve(report.port);
        } else this.pending.get(report.id)?.(report);
      });
    });
  }

  url(workload: WorkloadName, port: number): string {
    return `http://127.0.0.1:${port}${this.spec.pathFor(workload)}`;
  }

  /** CPU time so far and memory now; after a full GC when asked, for the leak check. */
  usage(collectGarbage = false): Promise<ChildReport & { type: 'usage' }> {
    const id = ++this.nextId;
    return new Promise((resolve) => {
      this.pending.set(id, (report) => {
        this.pending.delete(id);
        resolve(report);
      });
      this.send({ type: 'usage', id, collectGarbage });
    });
  }

  /** Asks the child to close and exit (which writes its CPU profile); kills it if it hangs. */
  stop(): Promise<void> {
    if (this.child.exitCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
      this.child.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      this.send({ type: 'exit' });
    });
  }

  private send(request: ChildRequest): void {
    this.child.send(request);
  }
}

// ---------------------------------------------------------------------------------------------
// Load and validation

function load(
  url: string,
  workload: Workload,
  bound: { seconds: number } | { requests: number; timeLimitSeconds: number },
): Promise<AutocannonResult> {
  const instance = autocannon({
    url,
    method: 'POST',
    headers: workload.headers,
    body: workload.body,
    connections: settings.connections,
    ...('seconds' in bound ? { duration: bound.seconds } : { amount: bound.requests }),
  });
  // Every loop is bounded in time too, even when it is bounded by a request count.
  const limit = 'seconds' in bound ? bound.seconds + 30 : bound.timeLimitSeconds;
  const timer = setTimeout(() => instance.stop(), limit * 1000);
  return Promise.resolve(instance).finally(() => clearTimeout(timer));
}

/** Failed requests of any kind; one is enough to make the run invalid. */
const failures = (result: AutocannonResult) =>
  result.non2xx + result.errors + result.timeouts + result.resets;

/**
 * One correct answer (status, content type, exact body) and, for servers that check it, a 401
 * for a bad signature: a server that skips its work cannot post a number.
 */
async function validate(server: ServerProcess, workload: Workload): Promise<string[]> {
  const url = server.url(workload.name, await server.port);
  const problems: string[] = [];
  const response = await fetch(url, {
    method: 'POST',
    headers: workload.headers,
    body: workload.body,
  });
  const body = await response.text();
  const where = `${server.spec.name} / ${workload.name}`;
  if (response.status !== 200) problems.push(`${where}: status ${response.status}: ${body}`);
  const contentType = response.headers.get('content-type') ?? '';
  const mediaType = workload.expectedContentType.split(';')[0]!;
  if (!contentType.startsWith(mediaType)) problems.push(`${where}: content type ${contentType}`);
  const sameBody = workload.expectedContentType.startsWith('application/json')
    ? safeJson(body) === safeJson(workload.expectedBody)
    : body === workload.expectedBody;
  if (!sameBody) problems.push(`${where}: unexpected body ${body.slice(0, 80)}`);
  if (server.spec.verifiesSignature) {
    const forged = { ...workload.headers, 'ce-signature': `sha256=${'0'.repeat(64)}` };
    const refused = await fetch(url, { method: 'POST', headers: forged, body: workload.body });
    await refused.arrayBuffer();
    if (refused.status !== 401) problems.push(`${where}: a forged signature got ${refused.status}`);
  }
  return problems;
}

function safeJson(text: string): string {
  try {
    return JSON.stringify(JSON.parse(text));
  } catch {
    return `invalid JSON: ${text}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Measurement

interface Sample {
  round: number;
  server: ServerName;
  workload: WorkloadName;
  requestsPerSecond: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  cpuMicrosPerRequest: number;
  rssMB: number;
  requests: number;
  failed: number;
}

async function measure(
  server: ServerProcess,
  workload: Workload,
  round: number,
  warmupSeconds: number,
): Promise<Sample> {
  const url = server.url(workload.name, await server.port);
  const warmup = await load(url, workload, { seconds: warmupSeconds });
  const before = await server.usage();
  const result = await load(url, workload, { seconds: settings.measureSeconds });
  const after = await server.usage();
  const requests = result.requests.total;
  const cpuMicros = after.cpu.user - before.cpu.user + (after.cpu.system - before.cpu.system);
  return {
    round,
    server: server.spec.name,
    workload: workload.name,
    requestsPerSecond: requests / result.duration,
    latencyP50Ms: result.latency.p50,
    latencyP99Ms: result.latency.p99,
    cpuMicrosPerRequest: cpuMicros / Math.max(requests, 1),
    rssMB: after.memory.rss / MiB,
    requests,
    failed: failures(warmup) + failures(result),
  };
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
};

/**
 * How a server compares with a reference, paired round by round, then the median of the rounds:
 * by throughput (req/s over req/s), or by CPU efficiency (the reference's CPU µs per request over
 * the server's), which the load generator sharing the machine disturbs less.
 */
function pairedRatio(
  samples: Sample[],
  workload: WorkloadName,
  server: ServerName,
  reference: ServerName,
  by: 'throughput' | 'cpu' = 'throughput',
): number | undefined {
  const ratios: number[] = [];
  for (let round = 1; round <= settings.rounds; round++) {
    const find = (name: ServerName) =>
      samples.find((s) => s.round === round && s.workload === workload && s.server === name);
    const subject = find(server);
    const base = find(reference);
    if (!subject || !base) continue;
    ratios.push(
      by === 'cpu'
        ? base.cpuMicrosPerRequest / subject.cpuMicrosPerRequest
        : subject.requestsPerSecond / base.requestsPerSecond,
    );
  }
  return ratios.length ? median(ratios) : undefined;
}

interface Cell {
  server: ServerName;
  workload: WorkloadName;
  requestsPerSecond: number;
  /** (max − min) / median of the rounds' req/s: how noisy the cell was. */
  spreadPercent: number;
  ratioToBareHttp?: number;
  ratioToBareNest?: number;
  /** Bare Nest's CPU µs per request over this server's. */
  cpuRatioToBareNest?: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  cpuMicrosPerRequest: number;
  rssMB: number;
}

/** The bare Nest route of the same adapter: what the module is compared with. */
const bareNestOf = (spec: ServerSpec): ServerName | undefined =>
  spec.role === 'c' ? (spec.adapter === 'fastify' ? 'nest-fastify' : 'nest-express') : undefined;

function summarize(samples: Sample[]): Cell[] {
  const cells: Cell[] = [];
  for (const workload of Object.keys(WORKLOADS) as WorkloadName[]) {
    for (const spec of Object.values(SERVERS)) {
      const mine = samples.filter((s) => s.server === spec.name && s.workload === workload);
      if (!mine.length) continue;
      const rps = mine.map((s) => s.requestsPerSecond);
      const bareNest = bareNestOf(spec);
      cells.push({
        server: spec.name,
        workload,
        requestsPerSecond: median(rps),
        spreadPercent: (100 * (Math.max(...rps) - Math.min(...rps))) / median(rps),
        ratioToBareHttp: pairedRatio(samples, workload, spec.name, 'node-http'),
        ratioToBareNest: bareNest && pairedRatio(samples, workload, spec.name, bareNest),
        cpuRatioToBareNest: bareNest && pairedRatio(samples, workload, spec.name, bareNest, 'cpu'),
        latencyP50Ms: median(mine.map((s) => s.latencyP50Ms)),
        latencyP99Ms: median(mine.map((s) => s.latencyP99Ms)),
        cpuMicrosPerRequest: median(mine.map((s) => s.cpuMicrosPerRequest)),
        rssMB: median(mine.map((s) => s.rssMB)),
      });
    }
  }
  return cells;
}

interface LeakResult {
  server: ServerName;
  requests: number;
  rssAfterWarmupMB: number;
  rssAfterLoadMB: number;
  heapAfterWarmupMB: number;
  heapAfterLoadMB: number;
  failed: number;
}

/** A long run of the module's text path: does memory settle after the warm-up? */
async function leakRun(name: ServerName): Promise<LeakResult> {
  const server = new ServerProcess(SERVERS[name]);
  try {
    const workload = WORKLOADS['text-64B'];
    const problems = await validate(server, workload);
    if (problems.length) throw new Error(problems.join('\n'));
    const url = server.url(workload.name, await server.port);
    const warmup = await load(url, workload, { seconds: settings.firstWarmupSeconds });
    const before = await server.usage(true);
    const result = await load(url, workload, {
      requests: settings.leakRequests,
      timeLimitSeconds: settings.leakTimeLimitSeconds,
    });
    const after = await server.usage(true);
    return {
      server: name,
      requests: result.requests.total,
      rssAfterWarmupMB: before.memory.rss / MiB,
      rssAfterLoadMB: after.memory.rss / MiB,
      heapAfterWarmupMB: before.memory.heapUsed / MiB,
      heapAfterLoadMB: after.memory.heapUsed / MiB,
      failed: failures(warmup) + failures(result),
    };
  } finally {
    await server.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// Targets and report

interface TargetCheck {
  target: string;
  detail: string;
  value: number | undefined;
  /** The same comparison by CPU µs per request, for corroboration on a noisy machine. */
  byCpu?: number;
  threshold: string;
  pass: boolean;
}

function evaluateTargets(cells: Cell[], samples: Sample[], leaks: LeakResult[]): TargetCheck[] {
  const checks: TargetCheck[] = [];
  const cell = (server: ServerName, workload: WorkloadName) =>
    cells.find((c) => c.server === server && c.workload === workload);
  for (const adapter of ['express', 'fastify'] as const) {
    for (const workload of ['text-64B', 'text-64KiB'] as const) {
      const value = cell(`module-${adapter}`, workload)?.ratioToBareNest;
      checks.push({
        target: '1. module text path vs bare Nest',
        detail: `${adapter}, ${workload}`,
        value,
        byCpu: cell(`module-${adapter}`, workload)?.cpuRatioToBareNest,
        threshold: '≥ 0.90×',
        pass: value !== undefined && value >= 0.9,
      });
    }
  }
  for (const adapter of ['express', 'fastify'] as const) {
    const value = cell(`module-${adapter}`, 'json-dto')?.ratioToBareNest;
    checks.push({
      target: '2. validated DTO vs bare Nest + ValidationPipe',
      detail: adapter,
      value,
      byCpu: cell(`module-${adapter}`, 'json-dto')?.cpuRatioToBareNest,
      threshold: '≥ 0.85×',
      pass: value !== undefined && value >= 0.85,
    });
  }
  for (const workload of SERVERS['azure-express'].workloads) {
    const value = pairedRatio(samples, workload, 'module-fastify', 'azure-express');
    checks.push({
      target: '3. module on Fastify vs @azure/web-pubsub-express',
      detail: workload,
      value,
      byCpu: pairedRatio(samples, workload, 'module-fastify', 'azure-express', 'cpu'),
      threshold: '≥ 2.00×',
      pass: value !== undefined && value >= 2,
    });
  }
  for (const leak of leaks) {
    const growth = leak.rssAfterLoadMB - leak.rssAfterWarmupMB;
    checks.push({
      target: '4. no leak: RSS growth after the long run',
      detail: `${leak.server}, ${leak.requests} requests`,
      value: growth,
      threshold: '≤ 20 MB',
      pass: growth <= 20 && leak.requests >= settings.leakRequests && leak.failed === 0,
    });
  }
  return checks;
}

const fixed = (value: number | undefined, digits: number) =>
  value === undefined ? '' : value.toFixed(digits);

function resultsTable(cells: Cell[]): string {
  const rows = cells.map((c) =>
    [
      c.workload,
      SERVERS[c.server].label,
      fixed(c.requestsPerSecond, 0),
      fixed(c.spreadPercent, 0) + '%',
      fixed(c.ratioToBareHttp, 2),
      fixed(c.ratioToBareNest, 2),
      fixed(c.latencyP50Ms, 1),
      fixed(c.latencyP99Ms, 1),
      fixed(c.cpuMicrosPerRequest, 0),
      fixed(c.rssMB, 0),
    ].join(' | '),
  );
  return [
    '| workload | server | req/s | spread | × (a) | × (b) | p50 ms | p99 ms | CPU µs/req | RSS MB |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map((row) => `| ${row} |`),
  ].join('\n');
}

function targetsTable(checks: TargetCheck[]): string {
  return [
    '| target | case | measured | wanted | result | by CPU µs/req |',
    '| --- | --- | ---: | --- | --- | ---: |',
    ...checks.map(
      (c) =>
        `| ${c.target} | ${c.detail} | ${fixed(c.value, 2)} | ${c.threshold} | ${c.pass ? 'PASS' : 'FAIL'} | ${fixed(c.byCpu, 2)} |`,
    ),
  ].join('\n');
}

function leakTable(leaks: LeakResult[]): string {
  return [
    '| server | requests | RSS after warm-up MB | RSS after run MB | heap after warm-up MB | heap after run MB |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
    ...leaks.map(
      (l) =>
        `| ${l.server} | ${l.requests} | ${fixed(l.rssAfterWarmupMB, 1)} | ${fixed(l.rssAfterLoadMB, 1)} | ${fixed(l.heapAfterWarmupMB, 1)} | ${fixed(l.heapAfterLoadMB, 1)} |`,
    ),
  ].join('\n');
}

function environment() {
  return {
    date: new Date().toISOString(),
    node: process.version,
    cpu: `${cpus().length} × ${cpus()[0]?.model ?? 'unknown'}`,
    loadAverageAtStart: loadavg().map((value) => Number(value.toFixed(2))),
    pinned: pin,
    settings,
  };
}

function reportMarkdown(
  env: Environment,
  cells: Cell[],
  checks: TargetCheck[],
  leaks: LeakResult[],
): string {
  return [
    '# Benchmark: the upstream route under load',
    '',
    `${env.date}, Node ${env.node}, ${env.cpu}, load average at start ${env.loadAverageAtStart.join(' ')}.`,
    `Mode ${settings.mode}: ${settings.rounds} interleaved round(s); autocannon, ${settings.connections} keep-alive connections;`,
    `warm-up ${settings.firstWarmupSeconds} s (${settings.rewarmSeconds} s in later rounds), then ${settings.measureSeconds} s measured.`,
    `Each server runs in its own process${pin ? ' pinned to CPU 1 (the load generator on CPU 0)' : ''}.`,
    '',
    '(a) bare node:http doing the same work (headers, HMAC, echo): the ceiling. (b) a bare Nest',
    'controller on the same adapter doing it by hand (the DTO workload: `ValidationPipe` on the same',
    'DTO): the floor Nest sets. (c) this module. (d) `@azure/web-pubsub-express` on plain Express',
    '(it does not check signatures).',
    '',
    'req/s, latencies, CPU and RSS are medians over the rounds; × (a) and × (b) are the medians of',
    "the rounds' paired ratios; spread is (max − min) / median of the rounds' req/s. CPU µs/req is",
    "the server process' user + system time over the measured window; RSS is read after it.",
    'Targets are judged on throughput; "by CPU µs/req" is the same comparison by CPU time per',
    "request (the reference's over the server's), which the load generator disturbs less.",
    '',
    resultsTable(cells),
    '',
    '## Targets',
    '',
    targetsTable(checks),
    '',
    `## Long run of the module's text path (memory after a full GC)`,
    '',
    leakTable(leaks),
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// Modes

async function benchmark(): Promise<boolean> {
  const env = environment();
  log(`mode ${settings.mode}, ${settings.rounds} round(s), load average ${env.loadAverageAtStart}`);
  const servers = Object.values(SERVERS).map((spec) => new ServerProcess(spec));
  const samples: Sample[] = [];
  const leaks: LeakResult[] = [];
  try {
    const problems: string[] = [];
    for (const server of servers) {
      for (const workload of server.spec.workloads) {
        problems.push(...(await validate(server, WORKLOADS[workload])));
      }
    }
    if (problems.length) {
      log(`Validation failed, nothing measured:\n  ${problems.join('\n  ')}`);
      return false;
    }
    log('every server answered every workload correctly and refused a forged signature');

    const warmed = new Set<string>();
    for (let round = 1; round <= settings.rounds; round++) {
      for (const workload of Object.values(WORKLOADS)) {
        const eligible = servers.filter((s) => s.spec.workloads.includes(workload.name));
        // Rotate the order each round so no server always runs first or last.
        const shift = (round - 1) % eligible.length;
        for (const server of [...eligible.slice(shift), ...eligible.slice(0, shift)]) {
          const key = `${server.spec.name}/${workload.name}`;
          const warmup = warmed.has(key) ? settings.rewarmSeconds : settings.firstWarmupSeconds;
          warmed.add(key);
          const sample = await measure(server, workload, round, warmup);
          samples.push(sample);
          log(
            `round ${round} ${workload.name.padEnd(10)} ${server.spec.name.padEnd(14)} ` +
              `${sample.requestsPerSecond.toFixed(0).padStart(6)} req/s  ` +
              `p99 ${sample.latencyP99Ms.toFixed(1)} ms  ${sample.cpuMicrosPerRequest.toFixed(0)} µs/req` +
              (sample.failed ? `  ${sample.failed} FAILED` : ''),
          );
        }
      }
    }
  } finally {
    await Promise.all(servers.map((server) => server.stop()));
  }

  for (const name of ['module-express', 'module-fastify'] as const) {
    log(`long run: ${settings.leakRequests} requests of text-64B to ${name}`);
    leaks.push(await leakRun(name));
  }

  return writeReport(env, samples, leaks);
}

type Environment = ReturnType<typeof environment>;

/** Summarizes, judges and writes the report; false when any request failed. */
function writeReport(env: Environment, samples: Sample[], leaks: LeakResult[]): boolean {
  const cells = summarize(samples);
  const checks = evaluateTargets(cells, samples, leaks);
  const markdown = reportMarkdown(env, cells, checks, leaks);
  const failed =
    samples.reduce((sum, s) => sum + s.failed, 0) + leaks.reduce((sum, l) => sum + l.failed, 0);
  mkdirSync(resultsDir, { recursive: true });
  const name = settings.mode === 'quick' ? 'quick' : 'latest';
  writeFileSync(`${resultsDir}${name}.md`, markdown);
  writeFileSync(
    `${resultsDir}${name}.json`,
    JSON.stringify({ environment: env, cells, targets: checks, leaks, samples }, null, 2) + '\n',
  );
  log('\n' + markdown);
  log(`written to bench/results/${name}.md and ${name}.json`);
  if (failed) log(`INVALID RUN: ${failed} requests failed (non-2xx, errors, timeouts or resets)`);
  return failed === 0;
}

/** Renders a recorded run again (e.g. after a change of the report's format). */
function rerender(file: string): boolean {
  const recorded = JSON.parse(readFileSync(file, 'utf8')) as {
    environment: Environment;
    samples: Sample[];
    leaks: LeakResult[];
  };
  settings = recorded.environment.settings;
  return writeReport(recorded.environment, recorded.samples, recorded.leaks);
}

async function profile(): Promise<boolean> {
  const profilesDir = `${resultsDir}profiles`;
  mkdirSync(profilesDir, { recursive: true });
  // The bare Nest routes are profiled too: the difference is what the module adds.
  const defaults = ['module-express', 'module-fastify', 'nest-express', 'nest-fastify'];
  const names = (option('servers')?.split(',') ?? defaults).map((name) => {
    if (!(name in SERVERS)) throw new Error(`unknown server ${name}`);
    return name as ServerName;
  });
  const sections: string[] = [];
  const summaries = new Map<ServerName, ProfileSummary>();
  for (const name of names) {
    const file = `${name}-text-64B.cpuprofile`;
    const server = new ServerProcess(SERVERS[name], [
      '--cpu-prof',
      `--cpu-prof-dir=${profilesDir}`,
      `--cpu-prof-name=${file}`,
    ]);
    const workload = WORKLOADS['text-64B'];
    let failed = 0;
    let requests = 0;
    try {
      const problems = await validate(server, workload);
      if (problems.length) throw new Error(problems.join('\n'));
      const url = server.url(workload.name, await server.port);
      log(`profiling ${name} for ${settings.profileSeconds} s of text-64B`);
      const result = await load(url, workload, { seconds: settings.profileSeconds });
      failed += failures(result);
      requests = result.requests.total;
    } finally {
      await server.stop();
    }
    if (failed) {
      log(`${name}: ${failed} requests failed, profile not trusted`);
      return false;
    }
    const summary = summarizeCpuProfile(`${profilesDir}/${file}`, requests, 30);
    summaries.set(name, summary);
    sections.push(profileMarkdown(`${name}, text-64B`, summary));
  }
  for (const adapter of ['express', 'fastify'] as const) {
    const module = summaries.get(`module-${adapter}`);
    const bare = summaries.get(`nest-${adapter}`);
    if (module && bare) {
      sections.unshift(
        comparisonMarkdown(
          `module-${adapter} vs nest-${adapter}: self time per package`,
          module,
          bare,
        ),
      );
    }
  }
  const markdown = [
    '# CPU profile under load',
    '',
    `${new Date().toISOString()}, Node ${process.version}; text-64B user events,`,
    `${settings.connections} connections, ${settings.profileSeconds} s per server, \`--cpu-prof\``,
    'on the server process (start-up included, idle excluded). µs/req divides by the requests',
    'served while profiling; the socket write (`writev`, mostly the kernel) is in every server alike.',
    '',
    ...sections,
  ].join('\n');
  writeFileSync(`${resultsDir}profile.md`, markdown);
  log('\n' + markdown);
  log('written to bench/results/profile.md (raw profiles in bench/results/profiles/)');
  return true;
}

if (pin) execFileSync('taskset', ['-pc', '0', String(process.pid)], { stdio: 'ignore' });
const recorded = option('from');
const ok = recorded
  ? rerender(recorded)
  : args.has('--profile')
    ? await profile()
    : await benchmark();
process.exitCode = ok ? 0 : 1;
