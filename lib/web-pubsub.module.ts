import { Module, type DynamicModule, type Provider } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import {
  DEFAULT_PATH,
  WEB_PUBSUB_CONFIG,
  WEB_PUBSUB_CONTROLLER,
  WEB_PUBSUB_PATH,
} from './web-pubsub.constants.js';
import { createWebPubSubController } from './web-pubsub.controller.js';
import { getDeclaredHubs, getHubToken } from './web-pubsub.decorators.js';
import { WebPubSubDispatcher } from './web-pubsub.dispatcher.js';
import { WebPubSubExplorer } from './web-pubsub.explorer.js';
import { WebPubSubGuard } from './web-pubsub.guard.js';
import { WebPubSubMiddleware } from './web-pubsub.middleware.js';
import {
  ConfigurableModuleClass,
  MODULE_OPTIONS_TOKEN,
  resolveConfig,
  type ASYNC_OPTIONS_TYPE,
  type OPTIONS_TYPE,
  type WebPubSubConfig,
  type WebPubSubModuleExtras,
} from './web-pubsub.options.js';

/** `/eventhandler/` or `eventhandler` → `/eventhandler`. */
function normalizePath(path: string): string {
  return '/' + path.replace(/^\/+|\/+$/g, '');
}

/**
 * The upstream of Azure Web PubSub as a Nest module: a controller on `path` answers the service's
 * requests, the `@WebPubSubHub()` providers of the app handle the events, and a
 * `WebPubSubServiceClient` per hub is provided for `@InjectHub()`.
 */
@Module({})
export class WebPubSubModule extends ConfigurableModuleClass {
  static override forRoot(options: typeof OPTIONS_TYPE): DynamicModule {
    return assemble(super.forRoot(options), options);
  }

  static override forRootAsync(options: typeof ASYNC_OPTIONS_TYPE): DynamicModule {
    return assemble(super.forRootAsync(options), options);
  }
}

function assemble(
  definition: DynamicModule,
  extras: Partial<WebPubSubModuleExtras>,
): DynamicModule {
  const path = normalizePath(extras.path ?? DEFAULT_PATH);
  const controller = createWebPubSubController(path, extras.controllerDecorators ?? []);
  let hubClients: { providers: Provider[]; tokens: string[] } | undefined;
  // Read when Nest scans the modules, after every file of the app is loaded: a hub class defined
  // in a file loaded after the one calling forRoot() still gets its client.
  const getHubClients = () => (hubClients ??= createHubClients(extras.hubs ?? []));
  const providers: Provider[] = [
    ...(definition.providers ?? []),
    { provide: WEB_PUBSUB_CONFIG, useFactory: resolveConfig, inject: [MODULE_OPTIONS_TOKEN] },
    { provide: WEB_PUBSUB_PATH, useValue: path },
    { provide: WEB_PUBSUB_CONTROLLER, useValue: controller },
    WebPubSubMiddleware,
    WebPubSubExplorer,
    WebPubSubDispatcher,
    WebPubSubGuard,
  ];
  return Object.defineProperties(
    {
      ...definition,
      imports: [...(definition.imports ?? []), DiscoveryModule],
      controllers: [controller],
    },
    {
      providers: { enumerable: true, get: () => [...providers, ...getHubClients().providers] },
      exports: {
        enumerable: true,
        get: () => [...(definition.exports ?? []), ...getHubClients().tokens],
      },
    },
  ) as DynamicModule;
}

/** A `WebPubSubServiceClient` provider for every hub listed or named in a decorator. */
function createHubClients(listed: readonly string[]) {
  const hubs = new Map<string, string>();
  for (const hub of [...listed, ...getDeclaredHubs()]) {
    if (!hubs.has(getHubToken(hub))) hubs.set(getHubToken(hub), hub);
  }
  const providers: Provider[] = [...hubs].map(([token, hub]) => ({
    provide: token,
    useFactory: (config: WebPubSubConfig) => config.createClient(hub),
    inject: [WEB_PUBSUB_CONFIG],
  }));
  return { providers, tokens: [...hubs.keys()] };
}
