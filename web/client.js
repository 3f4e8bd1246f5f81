// wshub browser client: placeholder until issue 5.
export class WsHub {}
