//! The lab's plot: dc-a's gateways' tunnels by local transit (datagrams sent per second) over
//! the failover run, the loss at the receiving hosts below, each event a vertical line, as
//! PNG and SVG.

use std::path::Path;

use anyhow::Context;
use gatewan_testbed::lab::failover::Timeline;
use plotters::coord::Shift;
use plotters::prelude::*;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const SIZE: (u32, u32) = (1200, 760);

/// Writes `timeline.png` and `timeline.svg` into `dir`; their paths.
pub fn write(timeline: &Timeline, dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let font = std::fs::read(FONT).with_context(|| {
        format!("reading {FONT} for the plot's text (Debian fonts-dejavu-core; cargo xtask setup)")
    })?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into()))
        .map_err(|_| anyhow::anyhow!("{FONT} is not a font the plot can use"))?;
    let (png, svg) = (dir.join("timeline.png"), dir.join("timeline.svg"));
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        draw(&root, timeline)?;
        root.present()?;
    }
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        draw(&root, timeline)?;
        root.present()?;
    }
    Ok(vec![png, svg])
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, t: &Timeline) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(plot_err)?;
    let end = t
        .loss
        .last()
        .map(|(x, _)| *x)
        .into_iter()
        .chain(t.tunnels.values().filter_map(|s| s.last().map(|(x, _)| *x)))
        .fold(1.0, f64::max);
    let (top, bottom) = root.split_vertically(SIZE.1 * 62 / 100);
    let peak = t
        .tunnels
        .values()
        .flatten()
        .map(|(_, y)| *y)
        .fold(10.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&top)
        .caption(
            "dc-a's gateways: datagrams their tunnels sent per second, by transit (flows and probes)",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..peak)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the flows started")
        .y_desc("datagrams/s")
        .draw()
        .map_err(plot_err)?;
    for (i, (label, series)) in t.tunnels.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                series.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    events(&mut chart, t, peak)?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;

    let mut loss = ChartBuilder::on(&bottom)
        .caption(
            "loss at the receiving hosts, all flows, per 100 ms",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..100.0)
        .map_err(plot_err)?;
    loss.configure_mesh()
        .x_desc("seconds since the flows started")
        .y_desc("% lost")
        .draw()
        .map_err(plot_err)?;
    loss.draw_series(LineSeries::new(t.loss.iter().copied(), RED.stroke_width(2)))
        .map_err(plot_err)?;
    events(&mut loss, t, 100.0)?;
    Ok(())
}

/// A dashed-looking grey line and a label for each event.
fn events<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    t: &Timeline,
    top: f64,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    for (i, (x, what)) in t.events.iter().enumerate() {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(*x, 0.0), (*x, top)],
                BLACK.mix(0.5).stroke_width(1),
            )))
            .map_err(plot_err)?;
        let y = top * (0.95 - 0.07 * (i % 7) as f64);
        chart
            .draw_series(std::iter::once(Text::new(
                what.clone(),
                (*x, y),
                ("sans-serif", 14).into_font(),
            )))
            .map_err(plot_err)?;
    }
    Ok(())
}

fn plot_err<E: std::error::Error + Send + Sync + 'static>(
    e: DrawingAreaErrorKind<E>,
) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_becomes_a_png_and_an_svg_with_its_events() {
        let mut t = Timeline::default();
        t.tunnels.insert(
            "lumen -> cogent".into(),
            (0..40).map(|i| (f64::from(i) * 0.25, 200.0)).collect(),
        );
        t.loss = (0..100)
            .map(|i| (f64::from(i) * 0.1, if i == 30 { 40.0 } else { 0.0 }))
            .collect();
        t.events = vec![(3.0, "lumen blackholed".into())];
        let dir = std::env::temp_dir().join(format!("gatewan-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let paths = write(&t, &dir).expect("plot");
        let png = std::fs::read(&paths[0]).expect("png");
        assert_eq!(&png[1..4], b"PNG");
        let svg = std::fs::read_to_string(&paths[1]).expect("svg");
        assert!(
            svg.contains("lumen blackholed") && svg.contains("<svg"),
            "{}",
            &svg[..200]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
