import {
  ConfigurableModuleBuilder,
  Logger,
  type HttpException,
  type ValidationPipeOptions,
} from '@nestjs/common';
import { isTokenCredential, type TokenCredential } from '@azure/core-auth';
import {
  AzureKeyCredential,
  WebPubSubServiceClient,
  type WebPubSubServiceClientOptions,
} from '@azure/web-pubsub';
import { DEFAULT_PATH } from './web-pubsub.constants.js';
import type { WebPubSubContext } from './web-pubsub.context.js';
import { createEntraVerifier, type EntraAuthOptions } from './web-pubsub.entra.js';
import { Messages, WebPubSubConfigurationError } from './web-pubsub.errors.js';
import {
  MAX_BODY_SIZE,
  createSignatureVerifier,
  normalizeAllowedEndpoint,
  parseConnectionString,
} from './web-pubsub.protocol.js';

/** Options of `WebPubSubModule.forRoot()`, or the value `forRootAsync()`'s factory returns. */
export interface WebPubSubModuleOptions {
  /** `Endpoint=https://<name>.webpubsub.azure.com;AccessKey=…;Version=1.0;` (an `http://` endpoint works for local emulators). */
  connectionString?: string;
  /** The service endpoint, with `credential`, instead of a connection string. */
  endpoint?: string;
  credential?: AzureKeyCredential | TokenCredential;
  /**
   * Every key a `ce-signature` may be made with (primary and secondary, for key rotation).
   * Defaults to the key of the connection string or `AzureKeyCredential`. `[]` turns the
   * signature check off.
   */
  accessKeys?: string[];
  /**
   * Service hosts the abuse-protection probe may come from (host names or URLs). Defaults to the
   * endpoint's host; `['*']` allows any.
   */
  allowedEndpoints?: string[];
  /**
   * Options for the `ValidationPipe` that transforms and validates `@EventData()` parameters typed
   * with a class, or `false` to pass payloads through unchecked. Default: `{ transform: true }`.
   */
  validation?: ValidationPipeOptions | false;
  /** Largest request body accepted, in bytes; larger ones get 413. Default 1 MiB, the service's frame limit. */
  maxBodySize?: number;
  /** Options for every `WebPubSubServiceClient` the module creates. */
  clientOptions?: WebPubSubServiceClientOptions;
  /**
   * Authentication beyond the signature. `entra`: every POST must carry a valid Microsoft Entra ID
   * bearer token from the service's managed identity (set the event handler's authentication to
   * managed identity). With access keys as well, both checks must pass.
   */
  auth?: { entra?: EntraAuthOptions };
  /**
   * Milliseconds a handler may take before the service is answered 504 (the handler is not
   * stopped). The service's own timeout is not documented; blocking events hold up a client's
   * handshake or message meanwhile. Default 20000; 0 turns the deadline off.
   */
  handlerTimeout?: number;
  /**
   * Answer a retried event (same hub, `ce-connectionId`, `ce-physicalConnectionId` and `ce-id`) with the first delivery's
   * answer instead of running the handler again, for this many milliseconds. Default 0 (off).
   * Per process: behind a load balancer, a retry may reach another instance.
   */
  deduplicationWindow?: number;
  /**
   * Turns a client error of a user event (a failed DTO validation, a guard's refusal, a thrown
   * 4xx `HttpException`) into a reply to the client, e.g. `(error) => ({ error: error.message })`.
   * Without it such errors are answered with their status, and the service closes the client's
   * connection on any non-2xx answer to a user event. 5xx errors are never turned into replies.
   */
  onUserEventError?: (error: HttpException, context: WebPubSubContext) => unknown;
}

/** Options known synchronously, even with `forRootAsync()`. */
export interface WebPubSubModuleExtras {
  /** The upstream route; it and every sub-path (for URL templates with `{hub}`/`{event}`) are handled. Default `/eventhandler`. */
  path: string;
  /** Register the module globally, so hub clients can be injected everywhere. */
  isGlobal: boolean;
  /** Hubs to provide a `WebPubSubServiceClient` for, beyond those named in `@InjectHub()`/`@WebPubSubHub()`. */
  hubs: string[];
  /** Extra decorators for the upstream controller, e.g. `SkipThrottle()` or a `@Public()` marker your global guard reads. */
  controllerDecorators: ClassDecorator[];
}

export const { ConfigurableModuleClass, MODULE_OPTIONS_TOKEN, OPTIONS_TYPE, ASYNC_OPTIONS_TYPE } =
  new ConfigurableModuleBuilder<WebPubSubModuleOptions>({ moduleName: 'WebPubSub' })
    .setClassMethodName('forRoot')
    .setExtras<WebPubSubModuleExtras>(
      { path: DEFAULT_PATH, isGlobal: false, hubs: [], controllerDecorators: [] },
      (definition, extras) => ({ ...definition, global: extras.isGlobal }),
    )
    .build();

/** The options checked and turned into what each request needs, once, at start-up. */
export interface WebPubSubConfig {
  endpoint: string;
  /** Resolves with the token's claims, or throws `EntraAuthError`; absent without `auth.entra`. */
  verifyBearer?: (authorization: string | undefined) => Promise<unknown>;
  verifySignature: (connectionId: string, header: string | undefined) => boolean;
  signatureRequired: boolean;
  allowedHosts: string[];
  validation: ValidationPipeOptions | false;
  maxBodySize: number;
  handlerTimeout: number;
  deduplicationWindow: number;
  onUserEventError?: WebPubSubModuleOptions['onUserEventError'];
  createClient(hub: string): WebPubSubServiceClient;
}

const MAX_TIMER_MS = 2 ** 31 - 1;

export function resolveConfig(options: WebPubSubModuleOptions): WebPubSubConfig {
  const { endpoint, credential, defaultKey } = resolveCredential(options);

  const entra = options.auth?.entra;
  let verifyBearer: WebPubSubConfig['verifyBearer'];
  if (entra) {
    if (!entra.allowedObjectIds?.length)
      new Logger('WebPubSubModule').warn(Messages.entraAnyCaller);
    try {
      verifyBearer = createEntraVerifier(entra);
    } catch (err) {
      throw new WebPubSubConfigurationError(`WebPubSubModule: ${(err as Error).message}`);
    }
  }

  // With Entra ID alone (local auth disabled on the resource) there may be no key at all.
  const accessKeys = options.accessKeys ?? (defaultKey ? [defaultKey] : entra ? [] : undefined);
  if (!accessKeys) throw new WebPubSubConfigurationError(Messages.noAccessKey);
  if (accessKeys.length === 0 && !entra) {
    new Logger('WebPubSubModule').warn(Messages.signatureCheckOff);
  }

  const allowedHosts = (options.allowedEndpoints ?? [endpoint]).map((entry) => {
    try {
      return normalizeAllowedEndpoint(entry);
    } catch {
      throw new WebPubSubConfigurationError(Messages.invalidAllowedEndpoint(entry));
    }
  });

  const maxBodySize = options.maxBodySize ?? MAX_BODY_SIZE;
  if (!Number.isSafeInteger(maxBodySize) || maxBodySize <= 0) {
    throw new WebPubSubConfigurationError(Messages.invalidMaxBodySize(options.maxBodySize));
  }

  const handlerTimeout = options.handlerTimeout ?? 20_000;
  const deduplicationWindow = options.deduplicationWindow ?? 0;
  for (const [name, value] of Object.entries({ handlerTimeout, deduplicationWindow })) {
    // Node's timers take at most 2^31-1 ms; a larger delay would fire at once.
    if (!Number.isFinite(value) || value < 0 || value > MAX_TIMER_MS) {
      throw new WebPubSubConfigurationError(Messages.invalidDuration(name, value));
    }
  }

  const clientOptions: WebPubSubServiceClientOptions = {
    // Local emulators speak plain http; the SDK refuses it unless told otherwise.
    ...(endpoint.startsWith('http://') ? { allowInsecureConnection: true } : {}),
    ...options.clientOptions,
  };

  return {
    endpoint,
    verifyBearer,
    verifySignature: createSignatureVerifier(accessKeys),
    signatureRequired: accessKeys.length > 0,
    allowedHosts,
    validation: options.validation === false ? false : { transform: true, ...options.validation },
    maxBodySize,
    handlerTimeout,
    deduplicationWindow,
    onUserEventError: options.onUserEventError,
    createClient: (hub) =>
      options.connectionString
        ? new WebPubSubServiceClient(options.connectionString, hub, clientOptions)
        : new WebPubSubServiceClient(
            endpoint,
            credential as AzureKeyCredential,
            hub,
            clientOptions,
          ),
  };
}

const isKeyCredential = (credential: unknown): credential is AzureKeyCredential =>
  typeof (credential as AzureKeyCredential | undefined)?.key === 'string' &&
  typeof (credential as AzureKeyCredential).update === 'function';

function resolveCredential(options: WebPubSubModuleOptions): {
  endpoint: string;
  credential?: AzureKeyCredential | TokenCredential;
  defaultKey?: string;
} {
  if (options.connectionString) {
    if (options.endpoint || options.credential) {
      throw new WebPubSubConfigurationError(Messages.bothCredentials);
    }
    try {
      const { endpoint, accessKey } = parseConnectionString(options.connectionString);
      return { endpoint, defaultKey: accessKey };
    } catch (err) {
      throw new WebPubSubConfigurationError(`WebPubSubModule: ${(err as Error).message}`);
    }
  }
  if (!options.endpoint || !options.credential) {
    throw new WebPubSubConfigurationError(Messages.missingCredentials);
  }
  if (!/^https?:\/\/[^/]/i.test(options.endpoint)) {
    throw new WebPubSubConfigurationError(Messages.invalidEndpoint(options.endpoint));
  }
  const endpoint = options.endpoint.replace(/\/+$/, '');
  // By shape, not instanceof: the app may load another copy of @azure/core-auth.
  if (isKeyCredential(options.credential)) {
    return { endpoint, credential: options.credential, defaultKey: options.credential.key };
  }
  if (isTokenCredential(options.credential)) return { endpoint, credential: options.credential };
  throw new WebPubSubConfigurationError(Messages.missingCredentials);
}
