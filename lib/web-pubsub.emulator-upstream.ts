/**
 * Delivery of events to the app's event handler, the way the service does it: the matching
 * handler setting (first match wins), the abuse-protection OPTIONS check before the first
 * delivery to a URL, then a signed CloudEvents POST in binary content mode.
 */
import type { EmulatorLog } from './web-pubsub.emulator.js';
import { CeHeaders, encodeHeaderText, eventType, signatureHeader } from './web-pubsub.protocol.js';

export type SystemEventName = 'connect' | 'connected' | 'disconnected';

export const SYSTEM_EVENTS: readonly SystemEventName[] = ['connect', 'connected', 'disconnected'];

/** One event handler setting of a hub, as in the service's hub settings. */
export interface EventHandlerSetting {
  /** The handler URL; `{hub}` and `{event}` are replaced per event. */
  urlTemplate: string;
  /** User events this handler receives: `'*'` (the default) or a list of event names. */
  userEvents?: '*' | readonly string[];
  /** System events this handler receives; every one by default. */
  systemEvents?: readonly SystemEventName[];
}

/** The event to deliver, with everything the headers need. */
export interface UpstreamEvent {
  hub: string;
  connectionId: string;
  /** Per-connection counter: 0 for `connect`, then 1, 2, … */
  eventId: number;
  kind: 'system' | 'user';
  /** `connect`, `connected`, `disconnected` or the user event's name. */
  eventName: string;
  userId?: string;
  subprotocol?: string;
  connectionState?: string;
  metadata?: Record<string, string>;
  contentType: string;
  body: Buffer;
}

export interface UpstreamResponse {
  status: number;
  headers: globalThis.Headers;
  body: Buffer;
}

/** The event could not reach the handler: validation failed, network error or timeout. */
export class UpstreamDeliveryError extends Error {
  override name = 'UpstreamDeliveryError';
}

const VALIDATION_CACHE_MS = 60_000;
/** A failed check is retried on a later event, but not more often than this. */
const VALIDATION_RETRY_MS = 1_000;
const REQUEST_TIMEOUT_MS = 100_000;

type Validation = { ok: boolean; until: number; error?: string };

const fill = (template: string, hub: string, event: string): string =>
  template
    .replace(/\{hub\}/gi, encodeURIComponent(hub))
    .replace(/\{event\}/gi, encodeURIComponent(event));

export class UpstreamDispatcher {
  private readonly validations = new Map<string, Validation>();
  private readonly pendingValidations = new Map<string, Promise<Validation>>();
  private readonly abort = new AbortController();

  constructor(
    private readonly settingsFor: (hub: string) => readonly EventHandlerSetting[],
    private readonly accessKeys: readonly string[],
    /** `WebHook-Request-Origin`: the emulator's host, as the service sends its own. */
    private readonly origin: string,
    private readonly log: EmulatorLog,
  ) {}

  /** The first setting of the hub that subscribes to the event, if any. */
  findHandler(
    hub: string,
    kind: 'system' | 'user',
    eventName: string,
  ): EventHandlerSetting | undefined {
    return this.settingsFor(hub).find((setting) => {
      if (kind === 'system') {
        return (setting.systemEvents ?? SYSTEM_EVENTS).includes(eventName as SystemEventName);
      }
      const userEvents = setting.userEvents ?? '*';
      return userEvents === '*' || userEvents.includes('*') || userEvents.includes(eventName);
    });
  }

  /** Sends the event; throws {@link UpstreamDeliveryError} when it cannot reach the handler. */
  async deliver(setting: EventHandlerSetting, event: UpstreamEvent): Promise<UpstreamResponse> {
    const validation = await this.validate(fill(setting.urlTemplate, event.hub, 'validate'));
    if (!validation.ok) {
      throw new UpstreamDeliveryError(
        `event "${event.eventName}" of connection ${event.connectionId} not delivered: ` +
          `abuse protection validation failed (${validation.error})`,
      );
    }
    const url = fill(setting.urlTemplate, event.hub, event.eventName);
    const headers: Record<string, string> = {
      'content-type': event.contentType,
      'ce-specversion': '1.0',
      'ce-awpsversion': '1.0',
      'ce-type': encodeHeaderText(
        event.kind === 'user'
          ? eventType('user', event.eventName)
          : eventType(event.eventName as SystemEventName),
      ),
      'ce-source': `/hubs/${event.hub}/client/${event.connectionId}`,
      'ce-id': String(event.eventId),
      'ce-time': new Date().toISOString(),
      'ce-signature': signatureHeader(this.accessKeys, event.connectionId),
      'ce-hub': event.hub,
      'ce-connectionId': event.connectionId,
      'ce-eventName': encodeHeaderText(event.eventName),
      'WebHook-Request-Origin': this.origin,
    };
    if (event.userId !== undefined) headers['ce-userId'] = encodeHeaderText(event.userId);
    if (event.subprotocol) headers['ce-subprotocol'] = event.subprotocol;
    if (event.connectionState) headers['ce-connectionState'] = event.connectionState;
    for (const [key, value] of Object.entries(event.metadata ?? {})) {
      headers[`x-webpubsub-metadata-${key}`] = value;
    }
    this.log.debug(
      `→ POST ${url} ${headers['ce-type']} connection=${event.connectionId} id=${event.eventId} ` +
        `(${event.body.length} bytes)`,
    );
    let response: Response;
    let body: Buffer;
    try {
      response = await fetch(url, {
        method: 'POST',
        headers,
        body: event.body,
        // A redirect would carry the signed event to another URL: treat it as a failure.
        redirect: 'manual',
        signal: AbortSignal.any([this.abort.signal, AbortSignal.timeout(REQUEST_TIMEOUT_MS)]),
      });
      body = Buffer.from(await response.arrayBuffer());
    } catch (err) {
      throw new UpstreamDeliveryError(
        `event "${event.eventName}" of connection ${event.connectionId} not delivered to ${url}: ${errorText(err)}`,
      );
    }
    this.log.debug(
      `← ${response.status} ${headers['ce-type']} connection=${event.connectionId} id=${event.eventId} ` +
        `(${body.length} bytes)`,
    );
    return { status: response.status, headers: response.headers, body };
  }

  /** Stops every request in flight: `close()` must not wait for a slow handler. */
  close(): void {
    this.abort.abort();
  }

  private async validate(url: string): Promise<Validation> {
    const cached = this.validations.get(url);
    if (cached && cached.until > Date.now()) return cached;
    // Concurrent first events share one check.
    let pending = this.pendingValidations.get(url);
    if (!pending) {
      pending = this.runValidation(url).finally(() => this.pendingValidations.delete(url));
      this.pendingValidations.set(url, pending);
    }
    return pending;
  }

  private async runValidation(url: string): Promise<Validation> {
    this.log.debug(`→ OPTIONS ${url} (abuse protection, origin ${this.origin})`);
    let error: string | undefined;
    try {
      const response = await fetch(url, {
        method: 'OPTIONS',
        headers: { 'WebHook-Request-Origin': this.origin, 'ce-awpsversion': '1.0' },
        redirect: 'manual',
        signal: AbortSignal.any([this.abort.signal, AbortSignal.timeout(10_000)]),
      });
      await response.arrayBuffer();
      // Several header lines arrive joined with ", ".
      const allowed = (response.headers.get(CeHeaders.allowedOrigin) ?? '')
        .split(/[\s,]+/)
        .map((value) => value.toLowerCase())
        .filter(Boolean);
      const originHost = this.origin.toLowerCase();
      const originName = originHost.replace(/:\d+$/, '');
      this.log.debug(
        `← ${response.status} OPTIONS ${url} WebHook-Allowed-Origin: ${allowed.join(', ')}`,
      );
      if (response.status < 200 || response.status > 299) {
        error = `OPTIONS ${url} answered ${response.status}`;
      } else if (allowed.length === 0) {
        error = `OPTIONS ${url} answered without a WebHook-Allowed-Origin header`;
      } else if (
        !allowed.some((value) => value === '*' || value === originHost || value === originName)
      ) {
        error = `OPTIONS ${url} allows "${allowed.join(', ')}", not "${this.origin}"`;
      }
    } catch (err) {
      error = `OPTIONS ${url} failed: ${errorText(err)}`;
    }
    const validation: Validation = error
      ? { ok: false, until: Date.now() + VALIDATION_RETRY_MS, error }
      : { ok: true, until: Date.now() + VALIDATION_CACHE_MS };
    if (error) this.log.error(`Abuse protection validation failed: ${error}`);
    this.validations.set(url, validation);
    return validation;
  }
}

export const errorText = (err: unknown): string => {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause instanceof Error ? `: ${err.cause.message}` : '';
  return `${err.message}${cause}`;
};
