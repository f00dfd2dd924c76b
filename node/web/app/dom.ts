// A few lines instead of a framework: elements are built with `h` and text is always set
// as text, never parsed as HTML, so nothing a user typed can become markup.

/** What `h` accepts as a child: nodes, text, and nothing (skipped). */
export type Child = Node | string | number | null | undefined | false;

/** Attributes and listeners: `onclick` etc. become listeners, `true` an empty attribute. */
export type Props = Record<string, string | number | boolean | null | undefined | ((event: never) => void)>;

/** Builds an element: `h("button", {class: "primary", onclick: go}, "Send")`. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, props: Props = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (typeof value === "function") {
      element.addEventListener(name.slice(2), value as EventListener);
    } else if (name === "value" && "value" in element) {
      (element as HTMLInputElement).value = String(value);
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(element, ...children);
  return element;
}

/** Appends children, skipping the empty ones. */
export function append(parent: Node, ...children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function replaceChildren(parent: Element, ...children: Child[]): void {
  parent.replaceChildren();
  append(parent, ...children);
}
